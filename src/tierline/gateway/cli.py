"""`tierline serve`: run the gateway in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

from tierline.config import load_config


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the OpenAI-compatible gateway")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080)")
    p.add_argument("--config", default=None,
                   help="YAML config file (default $TIERLINE_CONFIG, else built-in defaults)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes sharing the port (default: server.workers, 1)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from tierline.gateway.server import check_serve_args, serve

    check_serve_args(args.host, args.port, args.workers)  # before reading the config file
    config = load_config(args.config)
    if args.workers is not None:
        config.server.workers = args.workers
    serve(config, host=args.host, port=args.port, config_path=args.config)
    return 0
