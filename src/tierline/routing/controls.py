"""The per-request routing controls: the body's ``tierline`` object, the ``x-tierline-*``
headers and a key's routing defaults all name the same controls, validated here.

A bad value is an :class:`InvalidRequest` (400) naming the control; the learned strategy's
knobs (:data:`KNOBS`) are exclusive: one per request, and a request's knob replaces its key's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tierline.errors import InvalidRequest

CONTROL_KEYS = {
    "quality": "a number between 0 and 1",
    "max_cost_usd": "a number >= 0",
    "region": "a region / jurisdiction string (e.g. 'eu')",
    "zdr": "a boolean",
    "no_training": "a boolean",
    "open_weight": "a boolean",
    "models": "a list of deployment names",
    "sort": "one of 'price', 'latency', 'quality'",
    "strategy": "one of 'learned', 'cheapest', 'fastest', 'weighted', 'ordered'",
    "fallbacks": "a boolean",
    "cost_weight": "a number >= 0",
    "max_loss": "a number between 0 and 1",
}
#: the learned strategy's knobs: a request (and a key) sets at most one
KNOBS = ("max_loss", "quality", "cost_weight")
#: the controls a key may set defaults for (its filters - region, zdr, ... - are key fields)
KEY_DEFAULTS = (*KNOBS, "sort", "strategy", "fallbacks")
SORTS = {"price": "cheapest", "latency": "fastest", "quality": "quality"}
STRATEGIES = frozenset({"learned", "cheapest", "fastest", "weighted", "ordered"})


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def coerce_control(key: str, value: Any, param: str) -> Any:
    """``value`` if it is valid for control ``key``, else a 400 naming ``param``."""
    if key not in CONTROL_KEYS:
        raise InvalidRequest(f"unknown tierline control {key!r}; known: {sorted(CONTROL_KEYS)}",
                             param=param, code="unknown_parameter")
    ok = True
    if key in ("quality", "max_loss"):
        ok = _is_num(value) and 0 <= value <= 1
    elif key in ("max_cost_usd", "cost_weight"):
        ok = _is_num(value) and value >= 0
    elif key in ("zdr", "no_training", "open_weight", "fallbacks"):
        ok = isinstance(value, bool)
    elif key == "region":
        ok = isinstance(value, str) and 0 < len(value) <= 32
    elif key == "models":
        ok = isinstance(value, list) and bool(value) and all(isinstance(m, str) for m in value)
    elif key == "sort":
        ok = value in SORTS
    elif key == "strategy":
        ok = value in STRATEGIES
    if not ok:
        raise InvalidRequest(f"tierline control {key!r} must be {CONTROL_KEYS[key]}, "
                             f"got {value!r}", param=param, code="invalid_value")
    return value


def parse_control_value(key: str, raw: str) -> Any:
    """A control's value from text (a header, a CLI argument): numbers, booleans, lists."""
    if key in ("quality", "max_cost_usd", "cost_weight", "max_loss"):
        try:
            return float(raw)
        except ValueError:
            return raw
    if key in ("zdr", "no_training", "open_weight", "fallbacks"):
        low = raw.strip().lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False,
                "no": False}.get(low, raw)
    if key == "models":
        return [m.strip() for m in raw.split(",") if m.strip()]
    return raw.strip()


def check_one_knob(controls: Mapping[str, Any], prefix: str) -> None:
    """400 when ``controls`` set more than one of :data:`KNOBS`."""
    knobs = [k for k in KNOBS if k in controls]
    if len(knobs) > 1:
        name = knobs[1].replace("_", "-") if prefix.startswith("x-") else knobs[1]
        raise InvalidRequest(f"send one of the tierline controls {', '.join(KNOBS)}, not "
                             f"{' and '.join(knobs)}", param=f"{prefix}{name}",
                             code="invalid_value")


def with_defaults(controls: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A request's controls over its key's defaults (or its headers'), where the ranking
    controls replace rather than mix: a request that names a knob replaces the key's knob,
    `sort` and `strategy` (which would override the knob), and a request that names `strategy`
    or `sort` replaces the key's `strategy` and `sort` - a request's `strategy: ordered` is
    not overridden by its key's `sort: price`, nor its `max_loss` by `sort: quality`."""
    if not defaults:
        return controls
    drop: set[str] = set()
    if any(k in controls for k in KNOBS):  # a knob asks for learned routing with it
        drop.update(KNOBS, ("sort", "strategy"))
    if "strategy" in controls or "sort" in controls:
        drop.update(("strategy", "sort"))
    merged = {k: v for k, v in defaults.items() if k not in drop}
    merged.update(controls)
    return merged
