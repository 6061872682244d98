"""Loading "routing outcomes" JSONL files (see ``shared/routing-data/README.md``).

Each line is one prompt with per-model outcomes::

    {"id": ..., "split": "train"|"test", "messages": [{"role": "user", "content": ...}],
     "outcomes": {model: {"score": float, "cost_usd": float|null, "output_chars"?: int}},
     "flags"?: [...], "meta"?: {...}}

A malformed line raises :class:`DataError` whose message names ``file:line``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...types import messages_text

__all__ = [
    "MIN_PROFILE_PROMPTS",
    "DataError",
    "Example",
    "default_data_dir",
    "load_models_json",
    "load_outcomes",
    "load_prompts",
]

DATA_ENV = "TIERLINE_ROUTING_DATA"
#: the fewest labelled prompts a new model profile is fitted from (``router add-model``; a
#: few hundred are better): from a handful, a profile predicts their mean everywhere
MIN_PROFILE_PROMPTS = 100


class DataError(ValueError):
    """A routing-outcomes file could not be read (message names file:line)."""


@dataclass(frozen=True)
class Outcome:
    """One model's outcome on one prompt."""

    score: float
    cost_usd: float | None = None
    output_chars: int | None = None


@dataclass(frozen=True)
class Example:
    """One prompt with the outcomes of the models that answered it."""

    id: str
    text: str
    outcomes: dict[str, Outcome]
    split: str = "test"
    source: str = ""
    task: str = ""
    flags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, model: str) -> float:
        """Score of ``model`` on this prompt (KeyError if it has none)."""
        return self.outcomes[model].score


def default_data_dir() -> Path:
    """``$TIERLINE_ROUTING_DATA`` or ``../shared/routing-data`` relative to the cwd."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path("..") / "shared" / "routing-data"


def _fail(path: Path, lineno: int, msg: str) -> DataError:
    return DataError(f"{path}:{lineno}: {msg}")


def _prompt_text(obj: dict[str, Any], path: Path, lineno: int) -> str:
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise _fail(path, lineno, "'messages' must be a non-empty list")
        for m in msgs:
            c = m.get("content") if isinstance(m, dict) else None
            if not isinstance(c, str) and not (
                isinstance(c, list) and all(isinstance(p, dict) for p in c)
            ):
                raise _fail(
                    path, lineno, "each message needs a 'content': a string or a list of parts"
                )
        # the users' turns, as the gateway featurises a request (ChatRequest.routing_text)
        return messages_text(msgs, roles=("user",))
    for key in ("prompt", "text", "query"):
        if isinstance(obj.get(key), str):
            return str(obj[key])
    raise _fail(path, lineno, "no 'messages' (or 'prompt'/'text') field")


def _parse_outcomes(raw: Any, path: Path, lineno: int) -> dict[str, Outcome]:
    if not isinstance(raw, dict):
        raise _fail(path, lineno, "'outcomes' must be an object")
    out: dict[str, Outcome] = {}
    for model, o in raw.items():
        if isinstance(o, bool | int | float):  # a bare score
            o = {"score": o}
        if not isinstance(o, dict) or "score" not in o:
            raise _fail(path, lineno, f"outcome of {model!r} needs a 'score'")
        score = o["score"]
        if isinstance(score, bool):  # pass / fail
            score = float(score)
        if not isinstance(score, int | float):
            raise _fail(path, lineno, f"score of {model!r} is not a number")
        if not 0.0 <= float(score) <= 1.0:
            raise _fail(path, lineno, f"score of {model!r} outside [0, 1]: {score}")
        chars = o.get("output_chars")
        out[str(model)] = Outcome(
            float(score),
            _cost(o.get("cost_usd"), model, path, lineno),
            int(chars) if isinstance(chars, int) else None,
        )
    return out


def _cost(cost: Any, model: str, path: Path, lineno: int) -> float | None:
    """A line's ``cost_usd``: null, or a finite number >= 0."""
    if cost is None:
        return None
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        raise _fail(path, lineno, f"cost_usd of {model!r} is not a number: {cost!r}")
    if not math.isfinite(cost) or cost < 0:
        raise _fail(path, lineno, f"cost_usd of {model!r} must be finite and >= 0: {cost}")
    return float(cost)


def _iter_objects(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _fail(path, lineno, f"invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise _fail(path, lineno, "line is not a JSON object")
            yield lineno, obj


def load_outcomes(
    paths: Sequence[str | Path] | str | Path,
    *,
    split: str | None = None,
    skip_contaminated: bool = True,
    skip_overlap: bool = False,
) -> list[Example]:
    """Load routing-outcomes JSONL file(s).

    ``split``: ``"train"`` / ``"test"`` keeps only that split; ``None`` or ``"all"`` keeps all.
    ``skip_contaminated`` drops lines flagged ``contaminated``; ``skip_overlap`` drops lines
    flagged ``train_test_overlap``.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    want = None if split in (None, "all") else split
    examples: list[Example] = []
    for p in paths:
        path = Path(p)
        for lineno, obj in _iter_objects(path):
            text = _prompt_text(obj, path, lineno)
            if "outcomes" not in obj:
                raise _fail(path, lineno, "missing 'outcomes'")
            outcomes = _parse_outcomes(obj["outcomes"], path, lineno)
            flags = obj.get("flags") or []
            if not isinstance(flags, list):
                raise _fail(path, lineno, "'flags' must be a list")
            sp = obj.get("split", "test")
            if sp not in ("train", "test"):
                raise _fail(path, lineno, f"bad split {sp!r}")
            if want is not None and sp != want:
                continue
            if skip_contaminated and "contaminated" in flags:
                continue
            if skip_overlap and "train_test_overlap" in flags:
                continue
            meta = obj.get("meta") or {}
            examples.append(
                Example(
                    id=str(obj.get("id", f"{path.name}:{lineno}")),
                    text=text,
                    outcomes=outcomes,
                    split=sp,
                    source=str(obj.get("source", path.stem)),
                    task=str(obj.get("task", "")),
                    flags=tuple(str(f) for f in flags),
                    meta=meta if isinstance(meta, dict) else {},
                )
            )
    return examples


def load_prompts(path: str | Path) -> list[str]:
    """Prompts of a JSONL file: routing-outcomes lines or ``{"prompt"|"text"|"messages"}``."""
    p = Path(path)
    return [_prompt_text(obj, p, lineno) for lineno, obj in _iter_objects(p)]


def load_models_json(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Prices ``{model: {input_usd_per_mtok, output_usd_per_mtok, ...}}``.

    Without ``path``: the default data dir's ``models.json``, ``{}`` if there is none. A file
    that is given (or exists) but cannot be read or is not a JSON object of objects raises
    :class:`DataError` - a price file silently ignored would report costs of nothing.
    """
    if path is None:
        p = default_data_dir() / "models.json"
        if not p.exists():
            return {}
    else:
        p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(f"{p}: expected a JSON object {{model: {{input_usd_per_mtok: ...}}}}")
    for model, spec in data.items():
        for key, price in spec.items():
            if key.endswith("_usd_per_mtok") and price is not None and not _is_price(price):
                raise DataError(f"{p}: {model}.{key} must be a finite number >= 0: {price!r}")
    return data


def _is_price(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
