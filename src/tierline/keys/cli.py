"""`tierline keys create | list | revoke`: manage virtual API keys in the key store named by
the config (`keys.store`, default `<data dir>/keys.sqlite3`). A running gateway picks up
changes within about a second."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from tierline.config import load_config
from tierline.errors import InvalidRequest
from tierline.keys.store import PERIODS, KeyRecord, KeyStore
from tierline.routing.controls import parse_control_value


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="manage virtual API keys")
    ks = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    c = ks.add_parser("create", help="create a key (the secret is printed once)")
    _config_arg(c)
    c.add_argument("--name", required=True)
    c.add_argument("--models", default=None,
                   help="comma-separated deployments / tier:X / groups / auto (default: all)")
    c.add_argument("--budget-usd", type=float, default=None)
    c.add_argument("--period", choices=PERIODS, default="month")
    c.add_argument("--rpm", type=int, default=None, help="requests per minute")
    c.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    c.add_argument("--max-cost-usd", type=float, default=None, help="per-request cap")
    c.add_argument("--region", default=None)
    c.add_argument("--zdr", action="store_true", help="zero-data-retention deployments only")
    c.add_argument("--no-training", action="store_true")
    c.add_argument("--open-weight", action="store_true")
    c.add_argument("--allow-providers", default=None, help="comma-separated")
    c.add_argument("--deny-providers", default=None, help="comma-separated")
    c.add_argument("--routing", action="append", default=[], metavar="CONTROL=VALUE",
                   help="a routing default for the key's requests, e.g. max_loss=0.2 or "
                        "sort=price (repeatable; a request's own controls win)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_create)

    ls = ks.add_parser("list", help="list keys")
    _config_arg(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)

    r = ks.add_parser("revoke", help="revoke a key")
    _config_arg(r)
    r.add_argument("id")
    r.set_defaults(func=cmd_revoke)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config file (for the key-store path)")


def _store(args: argparse.Namespace) -> KeyStore:
    return KeyStore(load_config(args.config).keys_path())


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {"period": args.period}
    if args.models:
        spec["models"] = args.models
    for f in ("budget_usd", "rpm", "tpm", "max_cost_usd", "region", "allow_providers",
              "deny_providers"):
        v = getattr(args, f)
        if v is not None:
            spec[f] = v
    for f in ("zdr", "no_training", "open_weight"):
        if getattr(args, f):
            spec[f] = True
    if args.routing:
        routing: dict[str, Any] = {}
        for item in args.routing:
            k, sep, v = item.partition("=")
            if not sep:
                raise InvalidRequest(f"expected CONTROL=VALUE, got {item!r}", param="routing")
            routing[k.strip()] = parse_control_value(k.strip(), v)
        spec["routing"] = routing
    return spec


def cmd_create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        try:
            rec, secret = store.create(args.name, **_spec(args))
        except InvalidRequest as e:
            if e.param:
                e.message = f"--{e.param.replace('_', '-')}: {e.message}"
            raise
    finally:
        store.close()
    if args.json:
        sys.stdout.write(orjson.dumps({**rec.public(), "key": secret}).decode() + "\n")
        return 0
    print(f"created {rec.id} ({rec.name})")
    print(f"key: {secret}")
    print("store it now: it cannot be shown again")
    return 0


def _limits(r: KeyRecord) -> str:
    parts = []
    if r.budget_usd is not None:
        parts.append(f"${r.budget_usd:g}/{r.period}")
    if r.rpm is not None:
        parts.append(f"{r.rpm} rpm")
    if r.tpm is not None:
        parts.append(f"{r.tpm} tpm")
    return ", ".join(parts) or "-"


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        recs = store.list()
    finally:
        store.close()
    if args.json:
        sys.stdout.write(orjson.dumps([r.public() for r in recs]).decode() + "\n")
        return 0
    if not recs:
        print("no keys")
        return 0
    for r in recs:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created))
        state = "revoked" if r.revoked else "active"
        models = ",".join(r.models) or "all models"
        routing = " ".join(f"{k}={v}" for k, v in r.routing.items())
        print(f"{r.id}  {r.name:<20} {state:<8} {created}Z  {models}  {_limits(r)}"
              + (f"  routing: {routing}" if routing else ""))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        rec = store.revoke(args.id)
    finally:
        store.close()
    if rec is None:
        print(f"tierline: error: no key with id {args.id!r}", file=sys.stderr)
        return 1
    print(f"revoked {rec.id} ({rec.name})")
    return 0
