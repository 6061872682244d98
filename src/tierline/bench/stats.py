"""Statistics of a run: percentiles, means, bootstrap 95% CIs of latency medians (numpy,
fixed seed), pass rate and goodput with Wilson score 95% intervals (honest at small n and
at 0% / 100%, where a bootstrap collapses to zero width), cost per useful response, and
a warning when the targets cannot be told apart: fewer than `MIN_N` requests each, or
overlapping CIs.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

PCTS = (50, 90, 95, 99)
N_BOOT = 2000
SEED = 0
Z95 = 1.959963984540054
# below this many requests per side no difference is called significant (a percentile
# bootstrap of a median is meaningless at n of a few)
MIN_N = 10


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "requests.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dist(values: list[float]) -> dict[str, Any]:
    """p50/p90/p95/p99, mean, n and a bootstrap 95% CI of p50; nulls when empty."""
    import numpy as np

    out: dict[str, Any] = {"n": len(values)}
    if not values:
        out.update({f"p{p}": None for p in PCTS})
        out.update({"mean": None, "p50_ci": None})
        return out
    a = np.asarray(values, dtype=float)
    for p in PCTS:
        out[f"p{p}"] = round(float(np.percentile(a, p)), 3)
    out["mean"] = round(float(a.mean()), 3)
    lo, hi = bootstrap_ci(a, "median")
    out["p50_ci"] = [round(lo, 3), round(hi, 3)]
    return out


def bootstrap_ci(values: Any, stat: str = "mean", n_boot: int = N_BOOT,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean or the median."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    s = a[idx]
    est = np.median(s, axis=1) if stat == "median" else s.mean(axis=1)
    return float(np.percentile(est, 2.5)), float(np.percentile(est, 97.5))


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default); (nan, nan) if n = 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def overlaps(a: list[float] | None, b: list[float] | None) -> bool | None:
    """Whether two CIs overlap; None when either is missing (no data)."""
    if not a or not b:
        return None
    return not (a[1] < b[0] or b[1] < a[0])


def _ci(k: int, n: int) -> list[float] | None:
    if not n:
        return None
    lo, hi = wilson_ci(k, n)
    return [round(lo, 4), round(hi, 4)]


def summarize_target(recs: list[dict[str, Any]], slo_ttft_ms: float,
                     slo_e2e_ms: float | None) -> dict[str, Any]:
    measured = [r for r in recs if not r.get("warmup")]
    n = len(measured)
    ok = [r for r in measured if r["ok"]]
    passed = [r for r in measured if r["passed"]]
    errors: dict[str, int] = {}
    for r in measured:
        if not r["ok"]:
            errors[r["error_class"]] = errors.get(r["error_class"], 0) + 1
    req_cost = sum(float(r["cost_usd"]) for r in measured)
    judge_cost = sum(float(r.get("judge_cost_usd") or 0.0) for r in measured)
    total = req_cost + judge_cost

    def meets_slo(r: dict[str, Any]) -> bool:
        if r["ttft_ms"] is None or r["ttft_ms"] > slo_ttft_ms:
            return False
        return slo_e2e_ms is None or r["e2e_ms"] <= slo_e2e_ms

    good = [r for r in passed if meets_slo(r)]
    verdicts: dict[str, int] = {}
    for r in measured:
        for c in r.get("checks") or []:
            if c.get("verdict"):
                verdicts[c["verdict"]] = verdicts.get(c["verdict"], 0) + 1
    sources = sorted({r["cost_source"] for r in measured})
    tps = [r["output_tokens_per_s"] for r in ok if r.get("output_tokens_per_s")]
    out_tokens = sum(int(r["completion_tokens"]) for r in ok)
    span = (max((r["t_start_s"] + r["e2e_ms"] / 1000 for r in measured), default=0.0)
            - min((r["t_start_s"] for r in measured), default=0.0))
    routes: dict[str, int] = {}
    for r in ok:
        if r.get("route_model"):
            routes[r["route_model"]] = routes.get(r["route_model"], 0) + 1
    s: dict[str, Any] = {
        "n": n, "warmup": len(recs) - n, "ok": len(ok), "errors": n - len(ok),
        "errors_by_class": errors, "checked": sum(1 for r in measured if r.get("checked")),
        "passed": len(passed), "pass_rate": (len(passed) / n) if n else None,
        "pass_rate_ci": _ci(len(passed), n),
        "cost_usd_total": total, "cost_usd_requests": req_cost, "cost_usd_judge": judge_cost,
        "cost_usd_per_request": (total / n) if n else None,
        "cost_per_useful_response": (total / len(passed)) if passed else None,
        "cost_source": sources,
        "ttft_ms": dist([r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]),
        "e2e_ms": dist([r["e2e_ms"] for r in ok]),
        "tpot_ms": dist([r["tpot_ms"] for r in ok if r.get("tpot_ms") is not None]),
        "itl_ms": dist([x for r in ok for x in r.get("itl_ms") or []]),
        "output_tokens_per_s": round(statistics.median(tps), 3) if tps else None,
        "throughput_output_tokens_per_s": round(out_tokens / span, 3) if span > 0 else None,
        "prompt_tokens_total": sum(int(r["prompt_tokens"]) for r in ok),
        "completion_tokens_total": out_tokens,
        "slo": {"ttft_ms": slo_ttft_ms, "e2e_ms": slo_e2e_ms},
        "goodput": (len(good) / n) if n else None, "goodput_ci": _ci(len(good), n),
        "good": len(good),
        "verdicts": verdicts, "routes": routes, "notes": [],
    }
    if not passed:
        s["notes"].append("no response passed its checks: cost per useful response is "
                          "undefined (null)")
    if "none" in sources:
        s["notes"].append("some requests have no reported cost and no --price: "
                          "counted as $0")
    n_est = sum(1 for r in measured if r["cost_source"] == "estimated")
    if n_est:
        s["notes"].append(f"{n_est} request(s) reported no usage (e.g. a stream that failed "
                          "mid-way): cost estimated from the prompt and the output received")
    if s["checked"] == 0 and n:
        s["notes"].append("no checks: every successful response counts as useful")
    return s


def compare_warnings(targets: dict[str, dict[str, Any]]) -> list[str]:
    """Pairs of targets that cannot be told apart: too few requests (< MIN_N on a side),
    overlapping pass-rate or p50-latency CIs, or no latency data."""
    names = sorted(targets)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ta, tb = targets[a], targets[b]
            n = f"n={ta['n']}/{tb['n']}"
            if min(ta["n"], tb["n"]) < MIN_N:
                out.append(f"{a} and {b}: too few requests to separate them ({n}; at "
                           f"least {MIN_N} each)")
                continue
            if overlaps(ta["pass_rate_ci"], tb["pass_rate_ci"]):
                out.append(f"pass rate of {a} and {b}: 95% CIs overlap ({n}) - too few "
                           "requests to separate them")
            lat = overlaps(ta["e2e_ms"]["p50_ci"], tb["e2e_ms"]["p50_ci"])
            if lat is None:
                none = [x for x, t in ((a, ta), (b, tb)) if not t["e2e_ms"]["p50_ci"]]
                out.append(f"p50 latency of {a} and {b}: no latency data for "
                           f"{' and '.join(none)} (no successful request)")
            elif lat:
                out.append(f"p50 latency of {a} and {b}: 95% CIs overlap ({n})")
    return out


def summarize(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Build and write `summary.json` from `requests.jsonl`."""
    recs = read_records(run_dir)
    by_target: dict[str, list[dict[str, Any]]] = {name: [] for name in meta["targets"]}
    for r in recs:
        by_target.setdefault(r["target"], []).append(r)
    targets = {name: summarize_target(rs, meta["slo_ttft_ms"], meta.get("slo_e2e_ms"))
               for name, rs in by_target.items()}
    warnings = compare_warnings(targets)
    if meta.get("interrupted"):
        warnings.insert(0, "the run was interrupted: only the requests that completed "
                           "are counted")
    summary = {"run": meta, "targets": targets, "warnings": warnings}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False)
                                          + "\n", encoding="utf-8")
    return summary
