"""`tierline route PROMPT --explain`: the routing decision for a prompt, offline (nothing
is sent anywhere): candidates, what each filter removed and why, scores, the chain."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from tierline.accounting import tokens
from tierline.catalog.load import build_catalog
from tierline.config import load_config
from tierline.errors import ConfigError, InvalidRequest
from tierline.gateway.validate import parse_controls
from tierline.routing.filters import Constraints, required_capabilities
from tierline.routing.policy import Router


def register(sub: Any) -> None:
    p = sub.add_parser("route", help="explain the routing decision for a prompt (offline)")
    p.add_argument("prompt", help="the user prompt")
    p.add_argument("--model", default="auto", help="requested model / tier / group (auto)")
    p.add_argument("--config", default=None)
    p.add_argument("--control", action="append", default=[], metavar="KEY=VALUE",
                   help="a tierline control, e.g. max_loss=0.05, region=eu, zdr=true")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--explain", action="store_true", help="print the full decision")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(func=cmd_route)


def cmd_route(args: argparse.Namespace) -> int:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise InvalidRequest(f"--max-tokens must be at least 1 (got {args.max_tokens})")
    config = load_config(args.config)
    catalog = build_catalog(config)
    headers = {}
    for kv in args.control:
        k, _, v = kv.partition("=")
        headers["x-tierline-" + k.strip().replace("_", "-")] = v
    controls = parse_controls(None, headers)
    messages = [{"role": "user", "content": args.prompt}]

    def predictor() -> Any:
        from tierline.routing.learned.model import (
            LearnedRouter,
            RouterFileError,
            default_router_path,
        )
        try:
            return LearnedRouter.load(config.routing.router_file or default_router_path())
        except RouterFileError as e:
            raise ConfigError(f"invalid config {config.source}: routing.router_file: {e}") \
                from None

    router = Router(catalog, config.routing, predictor=predictor)
    c = Constraints(region=controls.get("region"), zdr=bool(controls.get("zdr")),
                    no_training=bool(controls.get("no_training")),
                    open_weight=bool(controls.get("open_weight")),
                    max_cost_usd=controls.get("max_cost_usd"),
                    needs=required_capabilities({"messages": messages}),
                    prompt_tokens=tokens.count_messages(messages),
                    max_output_tokens=args.max_tokens)
    d = router.route(args.model, controls, c, args.prompt)
    if args.json:
        sys.stdout.write(orjson.dumps({"reason": d.reason, **d.detail}).decode() + "\n")
        return 0
    print(f"route: {d.reason}")
    print(f"chain: {' -> '.join(x.name for x in d.chain)}")
    if args.explain:
        print(f"candidates ({len(d.detail['candidates'])}): "
              f"{', '.join(d.detail['candidates'])}")
        for name, why in d.detail.get("filtered", {}).items():
            print(f"  filtered {name}: {why}")
        for name, s in (d.detail.get("scores") or {}).items():
            print(f"  score {name}: quality={s['quality']} expected cost=${s['cost_usd']}")
        for line in catalog.skipped:
            print(f"  ({line})")
    return 0
