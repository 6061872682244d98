"""The `tierline` command. Each sub-command lives with its package and registers itself
(`register(subparsers)`); this module only wires them and handles errors uniformly:
a `TierlineError` prints one line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tierline.errors import TierlineError

# (module, attribute) of each sub-command group's register function
COMMAND_GROUPS = (
    "tierline.gateway.cli",
    "tierline.accounting.cli",
    "tierline.routing.cli",
    "tierline.models.cli",
    "tierline.routing.learned.cli",
    "tierline.bench.cli",
    "tierline.keys.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierline",
        description="OpenAI-compatible gateway with a learned cost-quality router.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in COMMAND_GROUPS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (mod == e.name or mod.startswith(e.name + ".")):  # not in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        rc = args.func(args)
    except TierlineError as e:
        print(f"tierline: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
