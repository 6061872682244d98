"""Cost-quality plots (matplotlib, optional extra ``plot``; imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_two_model(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Quality vs strong-call share (RouteLLM-style) with the strong / weak lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cur = result["curve"]
    ax.plot(
        [100 * s for s in cur["strong_share"]], cur["quality"], marker=".", label="learned router"
    )
    ax.plot([0, 100], [result["weak_quality"], result["strong_quality"]], ":", label="random")
    ax.axhline(result["strong_quality"], color="red", ls="--", label=result["strong"])
    ax.axhline(result["weak_quality"], color="grey", ls="--", label=result["weak"])
    ax.set_xlabel("strong model calls (%)")
    ax.set_ylabel("mean quality")
    ax.set_title(title or f"APGR {result['apgr']:.3f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_many(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Total cost vs mean quality: router sweep, oracle, single models, random router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rc = result["router_curve"]
    oc = result["oracle_curve"]
    ax.plot(rc["cost_usd"], rc["quality"], ".-", label=f"learned router (AIQ {result['aiq']:.3f})")
    ax.plot(oc["cost_usd"], oc["quality"], "x--", alpha=0.6, label="oracle")
    for m, v in result["single_models"].items():
        ax.scatter([v["cost_usd"]], [v["quality"]], s=18)
        ax.annotate(m, (v["cost_usd"], v["quality"]), fontsize=6)
    rr = result["random_router"]
    ax.scatter([rr["cost_usd"]], [rr["quality"]], marker="s", c="k", label="random router")
    ax.set_xscale("log")
    ax.set_xlabel("total cost (USD, estimated)")
    ax.set_ylabel("mean quality")
    ax.set_title(title or "cost-quality")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
