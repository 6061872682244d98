"""Rebuild the shipped default router from ``../shared/routing-data`` (deterministic).

    PYTHONPATH=src python -m tierline.routing.learned.build_default [--data DIR] [-o FILE]

Equivalent to ``tierline router train DATA/routellm-mmlu.jsonl DATA/routellm-gsm8k.jsonl
DATA/llmrouter.jsonl -o src/tierline/routing/learned/default_router.npz`` (``train`` split only,
``contaminated`` lines dropped, default hyper-parameters).  Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .data import default_data_dir

SOURCES = ("routellm-mmlu.jsonl", "routellm-gsm8k.jsonl", "llmrouter.jsonl")


def main(argv: list[str] | None = None) -> int:
    """Train on the train splits of the shared data and write the default router."""
    from .cli import main as cli_main
    from .model import default_router_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("-o", "--output", default=str(default_router_path()))
    args = ap.parse_args(argv)
    files = [str(Path(args.data) / s) for s in SOURCES]
    return cli_main(["router", "train", *files, "-o", args.output])


if __name__ == "__main__":
    raise SystemExit(main())
