"""Checks, targets, sampling and statistics without a server."""

from __future__ import annotations

import pytest

from tierline.bench.checks import check_sync, parse_choice, parse_number, parse_verdict
from tierline.bench.stats import bootstrap_ci, dist, overlaps, wilson_ci
from tierline.bench.targets import apply_prices, parse_target, request_cost
from tierline.bench.workload import BenchError, Item, parse_item, sample


def _it() -> Item:
    return Item(id="x", request={"messages": [{"role": "user", "content": "q"}]})


@pytest.mark.parametrize(("text", "n"), [("so 1,234.5 in all", 1234.5), ("-3", -3.0),
                                         ("answer: 42.", 42.0), ("none", None)])
def test_parse_number(text: str, n: float | None) -> None:
    assert parse_number(text) == n


@pytest.mark.parametrize(("text", "c"), [("B", "B"), ("(c) because", "C"),
                                         ("The answer is D.", "D"), ("**A**", "A"),
                                         ("no idea", None),
                                         # English "I" / "A" / "a" are not letters
                                         ("I think it's (C).", "C"),
                                         ("The answer is a tricky one, but I'd say (C).",
                                          "C"),
                                         ("A lot of people say B, but it is (D)", "D"),
                                         ("It is a hard one", None),
                                         # an explicit answer beats other markers
                                         ("Not (A): the answer is B", "B"),
                                         ("The answer is B. Option A is wrong, and "
                                          "option C overstates it.", "B"),
                                         ("Answer: C. (A) is too small, (D) too large.",
                                          "C"),
                                         ("**B**. Choice A would only hold in a vacuum.",
                                          "B"),
                                         ("The answer is B, since (i) holds.", "B"),
                                         ("I said B. No wait, the answer is C.", "C"),
                                         ("Answer: C", "C"), ("I am unsure.\nE", "E"),
                                         ("B) because", "B"), ("option (J)", "J")])
def test_parse_choice(text: str, c: str | None) -> None:
    assert parse_choice(text) == c


def test_checks_json_fenced_and_exact_case() -> None:
    schema = {"type": "object", "required": ["a"]}
    assert check_sync({"type": "json_schema", "schema": schema}, 'Sure:\n```json\n{"a": 1}\n```',
                      _it()).passed
    assert not check_sync({"type": "json_schema", "schema": schema}, "{}", _it()).passed
    assert check_sync({"type": "exact", "value": "Yes", "ignore_case": True}, " yes\n",
                      _it()).passed
    assert check_sync({"type": "number", "value": 3.1, "tolerance": 0.05}, "3.14",
                      _it()).passed


def test_verdicts() -> None:
    assert parse_verdict("CORRECT") == "correct"
    assert parse_verdict("Incorrect.") == "incorrect"
    assert parse_verdict("NOT ATTEMPTED") == "not_attempted"
    assert parse_verdict("not_attempted") == "not_attempted"
    # negation: "not correct" is not correct
    assert parse_verdict("Not correct.") == "incorrect"
    assert parse_verdict("The answer is not correct") == "incorrect"
    assert parse_verdict("It isn't entirely correct.") == "incorrect"
    assert parse_verdict("Not a refusal. Correct.") == "correct"  # another clause
    assert parse_verdict("Correct - not incorrect") == "correct"  # negated INCORRECT
    # a judge that reasons concludes at the end; more negators
    assert parse_verdict("technically correct but misses the rubric: INCORRECT") == \
        "incorrect"
    assert parse_verdict("No correct answer was given; INCORRECT") == "incorrect"
    assert parse_verdict("I cannot consider this correct.") == "incorrect"
    assert parse_verdict("neither correct nor complete") == "incorrect"
    assert parse_verdict("no idea") == "incorrect"


def test_targets_and_prices() -> None:
    t = parse_target("auto?quality=0.9")
    assert t.in_process and t.model == "auto" and t.extension == {"quality": 0.9}
    u = parse_target("http://h:1/v1/#gpt-4o")
    assert u.base_url == "http://h:1/v1" and u.model == "gpt-4o"
    body = t.body({"messages": [], "model": "ignored", "stream": False})
    assert body["model"] == "auto" and body["stream"] is True
    assert body["stream_options"]["include_usage"] and body["tierline"] == {"quality": 0.9}
    apply_prices([t, u], ["1,2", "http://h:1/v1/#gpt-4o=3,4"])
    assert request_cost(u, {"prompt_tokens": 1_000_000, "completion_tokens": 0}) == (3.0,
                                                                                     "price")
    assert request_cost(t, {"prompt_tokens": 5, "cost_usd": "0.000123"}) == (0.000123,
                                                                           "reported")
    with pytest.raises(BenchError):
        parse_target("http://h:1/v1")
    with pytest.raises(BenchError):
        apply_prices([t], ["nope=1,2"])


def test_bare_request_and_defaults() -> None:
    it = parse_item({"messages": [{"role": "user", "content": "hi"}]}, 7,
                    [{"type": "contains", "value": "x"}])
    assert it.id == "item-7" and it.checks[0]["type"] == "contains"


def test_stratified_sample_is_proportional_and_fixed() -> None:
    items = [Item(id=str(i), request={"messages": [{}]}, meta={"task": "a" if i < 80 else "b"})
             for i in range(100)]
    s = sample(items, 10, "task")
    assert sum(1 for x in s if x.meta["task"] == "a") == 8 and len(s) == 10
    assert [x.id for x in s] == [x.id for x in sample(items, 10, "task")]


def test_stats() -> None:
    d = dist([100.0, 200.0, 300.0, 400.0])
    assert d["p50"] == 250.0 and d["mean"] == 250.0 and d["n"] == 4
    assert d["p50_ci"][0] <= 250.0 <= d["p50_ci"][1]
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_ci([0, 1] * 50) == bootstrap_ci([0, 1] * 50)  # fixed seed
    assert dist([])["p50"] is None
    assert overlaps([0.1, 0.5], [0.4, 0.9]) and not overlaps([0.1, 0.2], [0.3, 0.4])


def test_wilson_intervals_do_not_collapse() -> None:
    """0/2 and 2/2 are not certainties: Wilson intervals keep their width (a bootstrap
    gives [0, 0] and [1, 1], and calls them different)."""
    lo, hi = wilson_ci(0, 2)
    assert lo == 0.0 and hi == pytest.approx(0.6576, abs=1e-4)
    lo, hi = wilson_ci(2, 2)
    assert lo == pytest.approx(0.3424, abs=1e-4) and hi == 1.0
    assert overlaps(list(wilson_ci(0, 2)), list(wilson_ci(2, 2)))
    assert wilson_ci(8, 20) == pytest.approx((0.2188, 0.6134), abs=1e-4)
    assert overlaps(None, [0.1, 0.2]) is None  # no data is not "overlap"


@pytest.mark.parametrize("price", ["nan,1", "inf,1", "1,-inf", "-1,1", "1", "a,b"])
def test_bad_prices(price: str) -> None:
    with pytest.raises(BenchError, match="--price"):
        apply_prices([parse_target("m")], [price])


def test_stratified_sample_keeps_every_small_stratum() -> None:
    items = [Item(id=str(i), request={"messages": [{}]},
                 meta={"task": "big" if i < 97 else "small" if i < 99 else "tiny"})
             for i in range(100)]
    s = sample(items, 10, "task")
    got = {t: sum(1 for x in s if x.meta["task"] == t) for t in ("big", "small", "tiny")}
    assert got == {"big": 8, "small": 1, "tiny": 1}
    assert len(sample(items, 2, "task")) == 2  # fewer than strata: the largest ones
