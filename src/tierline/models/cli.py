"""`tierline models ...`: pull builtin model weights into the cache and list them.

The main CLI calls `register(subparsers)`; each command sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tierline.models import fetch


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `models` command (with `pull` and `list`) to an argparse subparsers object."""
    models: argparse.ArgumentParser = subparsers.add_parser(
        "models", help="manage embedded model weights")
    sub = models.add_subparsers(dest="models_command", required=True)

    pull = sub.add_parser("pull", help="download a builtin model's GGUF weights into the cache")
    pull.add_argument("name", nargs="?", default=fetch.DEFAULT_MODEL,
                      help=f"builtin model name (default {fetch.DEFAULT_MODEL})")
    pull.add_argument("--cache-dir", default=None,
                      help="cache directory (default $TIERLINE_CACHE_DIR or "
                           "~/.cache/tierline/models)")
    pull.add_argument("--force", action="store_true", help="download even when cached")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(func=cmd_pull)

    ls = sub.add_parser("list", help="list builtin local models and whether they are cached")
    ls.add_argument("--cache-dir", default=None, help="cache directory")
    ls.set_defaults(func=cmd_list)
    return models


def cmd_pull(args: argparse.Namespace) -> int:
    try:
        path = fetch.pull(args.name, cache_dir=args.cache_dir, progress=not args.quiet,
                          force=args.force)
    except fetch.ModelFetchError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cache = fetch.cache_dir(args.cache_dir)
    for m in fetch.BUILTIN_MODELS:
        p = fetch.cached_path(m, cache)
        where = f"cached  {p}" if p.is_file() else f"not cached ({m.size_hint})"
        print(f"{m.name}  {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m tierline.models.cli ...`), for use before the main CLI."""
    parser = argparse.ArgumentParser(prog="tierline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
