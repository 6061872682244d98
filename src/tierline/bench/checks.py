"""Answer checks: contains, regex, exact, number, choice, json_schema, python, judge.

`run_checks` returns one `CheckResult` per check; an item passes when every check
passes. The judge check asks a judge target for a three-way verdict (correct /
incorrect / not_attempted, read by `verdict_of`); its cost is accounted by the caller.
`validate_checks` checks every field up front, before any request is sent.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tierline.bench.workload import BenchError, Item

# judge(prompt) -> (verdict text, cost in USD)
JudgeFn = Callable[[str], Awaitable[tuple[str, float]]]

CHECK_TYPES = ("contains", "regex", "exact", "number", "choice", "json_schema", "python",
               "judge")
_NUM_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Explicit multiple-choice markers (the last one in the answer wins): a parenthesised
# letter "(C)", "answer is C" / "answer: C" / "option C" / "choice C" (the letter upper-
# case: "the answer is a tricky one" names no letter), a bold letter "**C**", and a line
# that is only a letter ("C", "C.", "(c)"). A bare "I" or "A" in running text is English,
# never a letter. Without any marker, an answer that starts with "C)", "C." or "C:"
# counts.
#: choice markers by strength: an explicit "answer is X" / "Answer: X" (the last one: a
#: model may correct itself), then a bold letter or a line that is only the letter (the
#: first), then "(X)" (the last), then "option X" / "choice X" (the last); lower-case letters
#: in brackets ("(i)") and the words "I" / "A" in running text never count
_CHOICE_ANSWER = re.compile(r"\b(?i:answer)(?:\s+(?i:is|would\s+be|should\s+be))?\s*:?"
                            r"[\s(*]*\b([A-J])\b(?!')")
_CHOICE_PROMINENT = re.compile(r"\*\*\(?([A-J])\)?\*\*|^[ \t>*_-]*\(?([A-J])\)?[.):]?[ \t*_]*$",
                               re.M)
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
_CHOICE_OPTION = re.compile(r"\b(?i:option|choice)\s*:?[\s(*]*\b([A-J])\b(?!')")
_CHOICE_LEAD = re.compile(r"^\s*\**(?:\(([A-Ja-j])\)|\(?([A-J])\**[.):])(?:\s|$)")
JUDGE_PROMPT = """You are grading an answer to a request.

Request:
{question}

Answer to grade:
{answer}

Rubric: {rubric}

Reply with exactly one word: CORRECT if the answer satisfies the rubric, INCORRECT if it
attempts an answer that does not, NOT_ATTEMPTED if it refuses or does not answer."""


class JudgeFailed(Exception):
    """The judge call failed; what it cost (a started call is billed) is still counted."""

    def __init__(self, message: str, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.cost_usd = cost_usd


@dataclass(slots=True)
class CheckResult:
    type: str
    passed: bool
    detail: str = ""
    verdict: str | None = None  # judge only: correct / incorrect / not_attempted
    cost_usd: float = 0.0  # judge only

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "passed": self.passed}
        if self.detail:
            d["detail"] = self.detail
        if self.verdict is not None:
            d["verdict"] = self.verdict
            d["cost_usd"] = self.cost_usd
        return d


_NEEDS = {"contains": "value", "exact": "value", "number": "value", "choice": "value",
          "regex": "pattern", "json_schema": "schema", "python": "ref"}


def _number(c: dict[str, Any], key: str, where: str) -> float:
    v = c[key]
    try:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError
        x = float(v)
    except ValueError:
        raise BenchError(f"{where}: a {c['type']} check's '{key}' must be a number, "
                         f"got {v!r}") from None
    if not math.isfinite(x):
        raise BenchError(f"{where}: a {c['type']} check's '{key}' must be finite, got {v!r}")
    return x


def validate_check(c: dict[str, Any], where: str) -> None:
    """Every field of one check, so that a bad workload fails before any request is sent
    (not mid-run, after spending money)."""
    t = c.get("type")
    if t not in CHECK_TYPES:
        raise BenchError(f"{where}: unknown check type {t!r} "
                         f"(one of {', '.join(CHECK_TYPES)})")
    need = _NEEDS.get(t)
    if need and need not in c:
        raise BenchError(f"{where}: a {t} check needs '{need}'")
    if "ignore_case" in c and not isinstance(c["ignore_case"], bool):
        raise BenchError(f"{where}: 'ignore_case' must be true or false")
    if t in ("contains", "exact") and (isinstance(c["value"], bool)
                                       or not isinstance(c["value"], str | int | float)):
        raise BenchError(f"{where}: a {t} check's 'value' must be a string")
    elif t == "regex":
        if not isinstance(c["pattern"], str):
            raise BenchError(f"{where}: a regex check's 'pattern' must be a string")
        try:
            re.compile(c["pattern"])
        except re.error as e:
            raise BenchError(f"{where}: invalid regex {c['pattern']!r}: {e}") from None
    elif t == "number":
        _number(c, "value", where)
        if "tolerance" in c and _number(c, "tolerance", where) < 0:
            raise BenchError(f"{where}: a number check's 'tolerance' must not be negative")
    elif t == "choice" and not (isinstance(c["value"], str)
                                and re.fullmatch(r"\s*[A-Ja-j]\s*", c["value"])):
        raise BenchError(f"{where}: a choice check's 'value' must be one letter A-J, "
                         f"got {c['value']!r}")
    elif t == "json_schema":
        _validate_schema(c["schema"], where)
    elif t == "python":
        if not isinstance(c["ref"], str):
            raise BenchError(f"{where}: a python check's 'ref' must be 'module:function'")
        try:
            _load_ref(c["ref"])
        except BenchError as e:
            raise BenchError(f"{where}: {e.message}") from None
    elif t == "judge" and not isinstance(c.get("rubric", ""), str):
        raise BenchError(f"{where}: a judge check's 'rubric' must be a string")


def _validate_schema(schema: Any, where: str) -> None:
    import jsonschema

    if not isinstance(schema, dict | bool):
        raise BenchError(f"{where}: a json_schema check's 'schema' must be an object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise BenchError(f"{where}: invalid json_schema: {e.message}"[:300]) from None


def validate_checks(checks: list[dict[str, Any]], where: str) -> None:
    for k, c in enumerate(checks, 1):
        if not isinstance(c, dict):
            raise BenchError(f"{where}: check {k} is not an object")
        validate_check(c, f"{where}, check {k}" if len(checks) > 1 else where)


def parse_number(text: str) -> float | None:
    """The last number in the text (answers usually end with the result)."""
    found = _NUM_RE.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def parse_choice(text: str) -> str | None:
    """The multiple-choice letter (A-J) an answer gives, or None, by marker strength (see
    `_CHOICE_ANSWER` and what follows), else a leading "C)" / "C." / "C:"."""
    said = [m.group(1) for m in _CHOICE_ANSWER.finditer(text)]
    if said:
        return said[-1]
    m = _CHOICE_PROMINENT.search(text)
    if m:
        return m.group(1) or m.group(2)
    for rx in (_CHOICE_PAREN, _CHOICE_OPTION):
        found = [m.group(1) for m in rx.finditer(text)]
        if found:
            return found[-1]
    lead = _CHOICE_LEAD.match(text)  # "(c) because ...", "C) ...", "C. ..."
    return (lead.group(1) or lead.group(2)).upper() if lead else None


def extract_json(text: str) -> Any:
    """JSON from the answer: the whole text, a fenced block, or the outermost {...}/[...]."""
    s = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", s, re.S)
    candidates = [s]
    if fence:
        candidates.append(fence.group(1).strip())
    for o, c in (("{", "}"), ("[", "]")):
        i, j = s.find(o), s.rfind(c)
        if 0 <= i < j:
            candidates.append(s[i:j + 1])
    for cand in candidates:
        try:
            return json.loads(cand)
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON found in the answer")


def _check_json_schema(c: dict[str, Any], answer: str) -> CheckResult:
    import jsonschema

    try:
        doc = extract_json(answer)
    except ValueError as e:
        return CheckResult("json_schema", False, str(e))
    try:
        jsonschema.validate(doc, c["schema"])
    except jsonschema.ValidationError as e:
        return CheckResult("json_schema", False, f"schema: {e.message}"[:200])
    except jsonschema.SchemaError as e:
        raise BenchError(f"invalid json_schema check: {e.message}") from None
    return CheckResult("json_schema", True)


def _load_ref(ref: str) -> Callable[[str, Item], Any]:
    mod, _, fn = ref.partition(":")
    if not mod or not fn:
        raise BenchError(f"python check ref must be 'module:function', got {ref!r}")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise BenchError(f"python check {ref!r}: {e}") from None
    if not callable(obj):
        raise BenchError(f"python check {ref!r} is not callable")
    return obj  # type: ignore[no-any-return]


def check_sync(c: dict[str, Any], answer: str, item: Item) -> CheckResult:
    t = str(c.get("type"))
    if t == "contains":
        v = str(c["value"])
        ok = (v.lower() in answer.lower()) if c.get("ignore_case") else (v in answer)
        return CheckResult(t, ok, "" if ok else f"{v!r} not in answer")
    if t == "regex":
        flags = re.I if c.get("ignore_case") else 0
        ok = re.search(str(c["pattern"]), answer, flags | re.S) is not None
        return CheckResult(t, ok, "" if ok else "no match")
    if t == "exact":
        a, v = answer.strip(), str(c["value"]).strip()
        if c.get("ignore_case"):
            a, v = a.lower(), v.lower()
        return CheckResult(t, a == v, "" if a == v else "not equal")
    if t == "number":
        got = parse_number(answer)
        tol = float(c.get("tolerance", 0))
        ok = got is not None and abs(got - float(c["value"])) <= tol
        return CheckResult(t, ok, "" if ok else f"got {got}")
    if t == "choice":
        letter = parse_choice(answer)
        ok = letter is not None and letter == str(c["value"]).strip().upper()
        return CheckResult(t, ok, "" if ok else f"got {letter}")
    if t == "json_schema":
        return _check_json_schema(c, answer)
    if t == "python":
        fn = _load_ref(str(c["ref"]))
        try:
            ok = bool(fn(answer, item))
        except Exception as e:  # a user's check that raises fails the item, not the run
            return CheckResult(t, False, f"raised {type(e).__name__}: {e}"[:200])
        return CheckResult(t, ok)
    raise BenchError(f"unknown check type {t!r}")


_CLAUSE = re.compile(r"[.;:,!?\n]+")
_WORD = re.compile(r"[A-Z]+(?:'[A-Z]+)?")


_NEGATORS = frozenset({"NOT", "NEVER", "NO", "CANNOT", "NEITHER", "NOR", "HARDLY", "ISNT",
                       "ARENT", "WASNT", "DOESNT"})


def _negator(word: str) -> bool:
    return word in _NEGATORS or word.endswith("N'T")


def verdict_of(text: str) -> str | None:
    """The judge's verdict, or None when the reply names none. Grammar (case-insensitive,
    `_` and `-` read as spaces): the reply is split into clauses at . ; : , ! ? and line
    breaks; the *last* verdict phrase decides (a judge that reasons concludes at the end:
    "technically correct but misses the rubric: INCORRECT"):

    - `NOT ATTEMPTED` -> not_attempted
    - `INCORRECT` -> incorrect
    - `CORRECT` -> correct, unless a negator (`not`, `no`, `never`, `cannot`, `neither`,
      `nor`, `hardly`, `...n't`) is among the three words before it in the same clause
      ("Not correct.", "is not entirely correct", "I cannot consider this correct",
      "neither correct nor complete") -> incorrect; a negated `INCORRECT` ("not
      incorrect") -> correct
    """
    norm = text.upper().replace("_", " ").replace("-", " ").replace("\u2019", "'")
    verdict: str | None = None
    for clause in _CLAUSE.split(norm):
        words = _WORD.findall(clause)
        for i, w in enumerate(words):
            if w == "NOTATTEMPTED" or (w == "NOT" and words[i + 1:i + 2] == ["ATTEMPTED"]):
                verdict = "not_attempted"
            elif w == "INCORRECT":
                verdict = "correct" if any(map(_negator, words[max(0, i - 3):i])) \
                    else "incorrect"
            elif w == "CORRECT":
                verdict = "incorrect" if any(map(_negator, words[max(0, i - 3):i])) \
                    else "correct"
    return verdict


def parse_verdict(text: str) -> str:
    """`verdict_of`, a reply without a verdict counting as incorrect."""
    return verdict_of(text) or "incorrect"


async def run_checks(checks: list[dict[str, Any]], answer: str, item: Item,
                     judge: JudgeFn | None) -> list[CheckResult]:
    out: list[CheckResult] = []
    for c in checks:
        if c.get("type") != "judge":
            out.append(check_sync(c, answer, item))
            continue
        if judge is None:
            raise BenchError("a judge check needs --judge TARGET")
        prompt = JUDGE_PROMPT.format(question=item.prompt_text, answer=answer,
                                     rubric=c.get("rubric", "the answer is correct"))
        try:
            text, cost = await judge(prompt)
        except Exception as e:
            out.append(CheckResult("judge", False, f"judge failed: {e}"[:200],
                                   cost_usd=e.cost_usd if isinstance(e, JudgeFailed) else 0.0))
            continue
        verdict = verdict_of(text)
        out.append(CheckResult("judge", verdict == "correct",
                               "" if verdict else f"no verdict in {text[:80]!r}",
                               verdict=verdict or "incorrect", cost_usd=cost))
    return out
