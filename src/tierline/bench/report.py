"""Reports of one or more runs: `summary.md` (Markdown table), `report.html` (self-
contained: plots as inline base64 PNG, no network) and the PNG plots in `plots/`:
cost-quality frontier, latency ECDFs, TTFT vs prompt length, cost breakdown.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from tierline.bench.stats import compare_warnings, read_records
from tierline.bench.workload import BenchError

PLOTS = ("frontier", "latency_ecdf", "ttft_vs_prompt", "cost_breakdown")


def run_labels(run_dirs: list[Path]) -> list[str]:
    """A distinct label per run: the shortest trailing part of its path that no other run
    shares (`x/run` and `y/run`, not `run` twice); `#k` added to a run given twice."""
    parts = [d.resolve().parts for d in run_dirs]

    def tail(p: tuple[str, ...], k: int) -> str:
        return "/".join(p[-k:]).lstrip("/") or "/"

    out: list[str] = []
    seen: dict[str, int] = {}
    for p in parts:
        others = [q for q in parts if q != p]
        k = next((k for k in range(1, len(p))
                  if all(tail(q, k) != tail(p, k) for q in others)), len(p))
        label = tail(p, k)
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def load_runs(run_dirs: list[Path]) -> tuple[dict[str, dict[str, Any]],
                                             dict[str, list[dict[str, Any]]], list[str]]:
    """(summaries by target label, records by label, run-level warnings). With several
    runs, labels are `RUN/target`, RUN the shortest path suffix that is unique."""
    summaries: dict[str, dict[str, Any]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    warnings: list[str] = []
    for d, run_label in zip(run_dirs, run_labels(run_dirs), strict=True):
        try:
            s = json.loads((d / "summary.json").read_text(encoding="utf-8"))
            recs = read_records(d)
        except (OSError, json.JSONDecodeError) as e:
            raise BenchError(f"{d} is not a bench run directory: {e}") from None
        for name, t in s["targets"].items():
            label = name if len(run_dirs) == 1 else f"{run_label}/{name}"
            summaries[label] = t
            records[label] = [r for r in recs if r["target"] == name and not r["warmup"]]
        if len(run_dirs) == 1:
            warnings.extend(s.get("warnings", []))
    if len(run_dirs) > 1:
        warnings = compare_warnings(summaries)
    return summaries, records, warnings


def _f(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _usd(v: float | None) -> str:
    if v is None:
        return "n/a (none passed)"
    return f"${v:.6f}" if v < 1 else f"${v:.2f}"


def table_rows(summaries: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["target", "n", "errors", "pass rate [95% CI]", "TTFT p50 ms", "e2e p50 ms [CI]",
            "e2e p95 ms", "out tok/s", "spend", "cost/request", "cost per useful response",
            "goodput"]
    rows = []
    for name, t in summaries.items():
        pr, ci = t["pass_rate"], t["pass_rate_ci"]
        e2e = t["e2e_ms"]
        rows.append([
            name, str(t["n"]), str(t["errors"]),
            "-" if pr is None else f"{pr:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]",
            _f(t["ttft_ms"]["p50"]),
            "-" if e2e["p50"] is None else
            f"{e2e['p50']:.0f} [{e2e['p50_ci'][0]:.0f}, {e2e['p50_ci'][1]:.0f}]",
            _f(e2e["p95"]), _f(t["output_tokens_per_s"], "{:.1f}"),
            _usd(t["cost_usd_total"]), _usd(t["cost_usd_per_request"]),
            _usd(t["cost_per_useful_response"]), _f(t["goodput"], "{:.0%}")])
    return head, rows


def markdown(summaries: dict[str, dict[str, Any]], warnings: list[str],
             plots: list[str] | None = None) -> str:
    head, rows = table_rows(summaries)
    lines = ["# tierline bench", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    slo = next(iter(summaries.values()))["slo"] if summaries else {}
    lines += ["", f"Goodput = share of requests that pass their checks and meet the SLO "
              f"(TTFT <= {slo.get('ttft_ms')} ms"
              + (f", e2e <= {slo['e2e_ms']} ms" if slo.get("e2e_ms") else "") + "). "
              "Cost per useful response = all spend (failures and judge calls included) / "
              "responses that pass their checks."]
    notes = [f"- **{n}**: {x}" for n, t in summaries.items() for x in t.get("notes", [])]
    errs = [f"- **{n}** errors: " + ", ".join(f"{k} x{v}" for k, v in t["errors_by_class"]
                                              .items())
            for n, t in summaries.items() if t["errors_by_class"]]
    if notes or errs:
        lines += ["", "## Notes", "", *errs, *notes]
    if warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in warnings]]
    if plots:
        lines += ["", *[f"![{p}](plots/{p}.png)" for p in plots]]
    return "\n".join(lines) + "\n"


def _plots(summaries: dict[str, dict[str, Any]], records: dict[str, list[dict[str, Any]]],
           out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    names = list(summaries)
    made = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        t = summaries[n]
        if t["n"]:
            x, y = t["cost_usd_per_request"] or 0.0, t["pass_rate"] or 0.0
            ax.scatter([x], [y], s=60)
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
            lo, hi = t["pass_rate_ci"]
            ax.plot([x, x], [lo, hi], color="grey", lw=1)
    ax.set_xlabel("cost per request (USD)")
    ax.set_ylabel("pass rate (95% CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Cost-quality frontier")
    ax.grid(alpha=0.3)
    made.append(("frontier", fig))

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for key, ax in zip(("ttft_ms", "e2e_ms"), axes, strict=True):
        for n in names:
            v = np.sort([r[key] for r in records[n] if r["ok"] and r[key] is not None])
            if v.size:
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=n)
        ax.set_xlabel(f"{key.removesuffix('_ms').upper()} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle("Latency ECDF")
    made.append(("latency_ecdf", fig))

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        pts = [(r["prompt_tokens"] or r["prompt_chars"] / 4, r["ttft_ms"])
               for r in records[n] if r["ok"] and r["ttft_ms"] is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.7, label=n)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT vs prompt length")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    made.append(("ttft_vs_prompt", fig))

    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [sum(r["cost_usd"] for r in records[n] if r["passed"]) for n in names]
    bad = [sum(r["cost_usd"] for r in records[n] if not r["passed"]) for n in names]
    judge = [summaries[n]["cost_usd_judge"] for n in names]
    x = np.arange(len(names))
    ax.bar(x, ok, label="passed responses")
    ax.bar(x, bad, bottom=ok, label="failed / wrong responses")
    ax.bar(x, judge, bottom=np.add(ok, bad), label="judge calls")
    ax.set_xticks(x, names, rotation=15, fontsize=8)
    ax.set_ylabel("USD")
    ax.set_title("Spend breakdown")
    ax.legend(fontsize=7)
    made.append(("cost_breakdown", fig))

    for name, f in made:
        f.tight_layout()
        f.savefig(out / f"{name}.png", dpi=110)
        plt.close(f)
    return [n for n, _ in made]


def html_report(summaries: dict[str, dict[str, Any]], warnings: list[str], plot_dir: Path,
                plots: list[str]) -> str:
    head, rows = table_rows(summaries)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tierline bench</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}td:first-child{text-align:left}"
             ".warn{color:#a60}img{max-width:100%;margin:1em 0}</style></head><body>",
             "<h1>tierline bench</h1><table><tr>",
             "".join(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    for n, t in summaries.items():
        for note in t.get("notes", []):
            parts.append(f"<p><b>{esc(n)}</b>: {esc(note)}</p>")
        if t["errors_by_class"]:
            errs = ", ".join(f"{k} x{v}" for k, v in t["errors_by_class"].items())
            parts.append(f"<p><b>{esc(n)}</b> errors: {esc(errs)}</p>")
    for w in warnings:
        parts.append(f"<p class='warn'>&#9888; {esc(w)}</p>")
    for p in plots:
        data = base64.b64encode((plot_dir / f"{p}.png").read_bytes()).decode()
        parts.append(f"<h2>{esc(p.replace('_', ' '))}</h2>"
                     f"<img alt='{esc(p)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_reports(run_dirs: list[Path], out: Path, plots: bool = True) -> list[str]:
    """Write summary.md, report.html and plots/ into `out`; returns the plot names."""
    summaries, records, warnings = load_runs(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    names = _plots(summaries, records, out / "plots") if plots and summaries else []
    (out / "summary.md").write_text(markdown(summaries, warnings, names), encoding="utf-8")
    (out / "report.html").write_text(html_report(summaries, warnings, out / "plots", names),
                                     encoding="utf-8")
    return names
