"""Routing-decision latency of the learned router (featurise + predict all + choose).

    PYTHONPATH=src python bench/router_speed.py [--router FILE] [--n 3000]

Builds a ~1,000-token prompt (about 4,000 characters of mixed prose / maths / code) and prints
p50 / p99 / mean over ``--n`` decisions (after a warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time

from tierline.routing.learned.choose import choose
from tierline.routing.learned.model import LearnedRouter, default_router_path

PARAGRAPH = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May? Explain each step. "
    "def solve(xs):\n    return sum(x * x for x in xs if x % 2 == 0)\n"
    "The mitochondria is the powerhouse of the cell; which organelle synthesises proteins? "
    "A. Ribosome B. Golgi apparatus C. Lysosome D. Vacuole Answer: "
)


def make_prompt(chars: int = 4000) -> str:
    """About ``chars`` characters (~ chars / 4 tokens)."""
    out: list[str] = []
    i = 0
    while sum(len(p) for p in out) < chars:
        out.append(f"[{i}] " + PARAGRAPH)
        i += 1
    return "".join(out)[:chars]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--router", default=str(default_router_path()))
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--chars", type=int, default=4000)
    args = ap.parse_args()
    router = LearnedRouter.load(args.router)
    costs = {m: 1.0 + i for i, m in enumerate(router.profiles)}
    base = make_prompt(args.chars)
    prompts = [f"{i} {base}" for i in range(50)]  # vary the text a little
    for p in prompts:
        choose(router.predict(p), costs, quality=0.7)
    times = []
    for i in range(args.n):
        p = prompts[i % len(prompts)]
        t0 = time.perf_counter()
        choose(router.predict(p), costs, quality=0.7)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"router decision latency over {args.n} decisions, prompt {len(base)} chars "
        f"(~{len(base) // 4} tokens), {len(router.profiles)} profiles: "
        f"p50={p50:.3f} ms p99={p99:.3f} ms mean={statistics.fmean(times):.3f} ms"
    )


if __name__ == "__main__":
    main()
