"""``tierline router ...`` sub-commands (registered by the main CLI via :func:`register`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import (
    MIN_PROFILE_PROMPTS,
    DataError,
    default_data_dir,
    load_models_json,
    load_outcomes,
    load_prompts,
)

__all__ = ["main", "register"]


def _router_path(p: str | None) -> Path:
    from .model import default_router_path

    return Path(p) if p else default_router_path()


def _prices(args: argparse.Namespace, data: list[str]) -> dict[str, dict[str, Any]]:
    if args.models_json:
        return load_models_json(args.models_json)
    for d in data:  # models.json next to the data, else the default data dir
        cand = Path(d).parent / "models.json"
        if cand.exists():
            return load_models_json(cand)
    return load_models_json(default_data_dir() / "models.json")


def _cmd_train(args: argparse.Namespace) -> int:
    from .features import FeatureConfig
    from .train import train_router

    config = FeatureConfig(bits=args.bits)  # bad options fail before the data is read
    ex = load_outcomes(args.data, split=args.split, skip_overlap=args.skip_overlap)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr))
    router = train_router(
        ex,
        config=config,
        C=args.C,
        shared_scale=args.shared_scale,
        knn=not args.no_knn,
        log=log,
    )
    router.save(args.output)
    print(f"wrote {args.output} ({len(ex)} prompts, profiles: {', '.join(router.profiles)})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import many_model_eval, two_model_eval
    from .model import LearnedRouter

    router = LearnedRouter.load(_router_path(args.router))
    ex = load_outcomes(
        args.data,
        split=args.split,
        skip_contaminated=not args.include_contaminated,
        skip_overlap=not args.include_overlap,
    )
    prices = _prices(args, args.data)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or "-".join(Path(d).stem for d in args.data)
    if (args.strong is None) != (args.weak is None):
        raise ValueError("give both --strong and --weak (or neither)")
    if args.strong:
        res = two_model_eval(
            router,
            ex,
            args.strong,
            args.weak,
            prices,
            mode=args.mode,
            num_results=args.num_results,
            both_turns=args.both_turns,
        )
        keys: tuple[str, ...] = (
            "n",
            "apgr",
            "cpt50",
            "cpt80",
            "strong_share_at_95",
            "cost_saving_at_95",
        )
    else:
        models = args.models.split(",") if args.models else _common_models(ex, router.profiles)
        res = many_model_eval(router, ex, models, prices)
        keys = ("n", "aiq", "aiq_oracle", "aiq_single_models_hull", "delta_vs_best_single")
    res["data"] = [str(d) for d in args.data]
    if out_dir:
        (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1))
        from .plot import plot_many, plot_two_model

        if args.strong:
            plot_two_model(res, out_dir / f"{name}.png", title=f"{name} (APGR {res['apgr']:.3f})")
        elif res["aiq"] is not None:  # a cost-quality plot needs costs
            plot_many(res, out_dir / f"{name}.png", title=name)
    if res["skipped_incomplete"]:
        print(
            f"note: {res['skipped_incomplete']} prompts without an outcome for every evaluated "
            "model were left out",
            file=sys.stderr,
        )
    if res.get("unpriced_models"):
        what = "cost_saving_at_95 is" if args.strong else "costs, AIQ and the cost curve are"
        print(
            f"note: no cost_usd and no list price for {', '.join(res['unpriced_models'])}: "
            f"{what} null (give --models-json FILE)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(res))
    else:
        print(" ".join(f"{k}={_fmt(res[k])}" for k in keys))
        if not args.strong:
            b = res["best_single"]
            print(f"best single: {b['model']} quality={b['quality']:.4f} "
                  f"cost={_fmt(b['cost_usd'])}")
            if res["aiq"] is None:
                print(f"router's best-predicted pick: {res['router_best_predicted_quality']:.4f} "
                      f"(oracle {res['oracle_quality']:.4f})")
            else:
                print(f"router at that cost: {_fmt(res['router_best_at_best_single_cost'])}")
    return 0


def _common_models(ex: list[Any], profiles: list[str]) -> list[str]:
    if not ex:
        return []
    common = set(ex[0].outcomes)
    for e in ex[1:]:
        common &= set(e.outcomes)
    out = sorted(m for m in common if m in profiles)
    if len(out) >= 2:
        return out
    # sparse data: every known model (the prompts that lack one are then left out)
    return sorted({m for e in ex for m in e.outcomes if m in profiles})


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from . import calibrate as cal
    from .model import LearnedRouter

    router = LearnedRouter.load(_router_path(args.router))
    texts = load_prompts(args.data)
    costs = cal.parse_costs(args.costs)
    if args.knob == "quality":
        if args.strong_share is not None:
            # the strong model: --strong, or the other profile of a two-model router
            others = [m for m in router.profiles if m != args.weak]
            strong = args.strong if args.strong in router.profiles else (
                others[0] if len(others) == 1 else None)
            t = cal.threshold_for_strong_share(router, texts, args.weak, args.strong_share,
                                               strong=strong)
        else:
            t = cal.threshold_for_cost(router, texts, costs, args.cost_per_1k)
    elif args.knob == "max_loss":
        if args.strong_share is not None:
            t = cal.max_loss_for_strong_share(router, texts, args.strong, args.weak,
                                              args.strong_share)
        else:
            t = cal.max_loss_for_cost(router, texts, costs, args.cost_per_1k)
    elif args.strong_share is not None:
        t = cal.cost_weight_for_strong_share(router, texts, args.strong, args.weak, costs,
                                             args.strong_share)
    else:
        t = cal.cost_weight_for_cost(router, texts, costs, args.cost_per_1k)
    print(f"{t:.10g}")  # mid-step values: enough digits to stay inside the step
    return 0


def _cmd_add_model(args: argparse.Namespace) -> int:
    from .model import LearnedRouter

    router = LearnedRouter.load(_router_path(args.router))
    ex = [e for e in load_outcomes(args.data, split=args.split) if args.model in e.outcomes]
    if not ex:
        raise ValueError(f"model {args.model!r} has no outcome in the data")
    router.add_profile(args.model, [e.text for e in ex], [e.score(args.model) for e in ex],
                       min_prompts=args.min_prompts)
    router.save(args.output)
    print(f"wrote {args.output}: added {args.model} from {len(ex)} prompts")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``router`` command and its sub-commands."""
    p = subparsers.add_parser("router", help="learned cost-quality router")
    sub = p.add_subparsers(dest="router_cmd", required=True)

    t = sub.add_parser("train", help="train a router on routing-outcomes JSONL")
    t.add_argument("data", nargs="+")
    t.add_argument("-o", "--output", required=True)
    t.add_argument("--split", default="train", choices=["train", "test", "all"])
    t.add_argument("--skip-overlap", action="store_true", help="drop train_test_overlap lines")
    t.add_argument("--bits", type=int, default=17, help="hash dimension = 2**bits")
    t.add_argument("--C", type=float, default=None, help="inverse L2 strength (default: validated)")
    t.add_argument(
        "--shared-scale",
        type=float,
        default=None,
        help="weight of the shared multi-task block, 0 = independent regressions "
        "(default: picked per model group on a validation split of the train data)",
    )
    t.add_argument(
        "--no-knn",
        action="store_true",
        help="no nearest-neighbour evidence (default: its (k, weight) is validated per group)",
    )
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_guarded(_cmd_train))

    e = sub.add_parser("eval", help="evaluate a router (RouteLLM / RouterBench metrics)")
    e.add_argument("data", nargs="+")
    e.add_argument("--router", default=None, help="router file (default: the shipped one)")
    e.add_argument("--strong")
    e.add_argument("--weak")
    e.add_argument("--models", help="comma list for the many-model eval (default: all common)")
    e.add_argument("--split", default="test", choices=["train", "test", "all"])
    e.add_argument("--include-contaminated", action="store_true")
    e.add_argument("--include-overlap", action="store_true")
    e.add_argument("--mode", default="gain", choices=["gain", "threshold"])
    e.add_argument("--both-turns", action="store_true", help="MT-Bench: mean of turn 1 and 2")
    e.add_argument("--num-results", type=int, default=10)
    e.add_argument("--models-json", help="prices (default: models.json beside the data)")
    e.add_argument("--out", help="directory for <name>.json and <name>.png")
    e.add_argument("--name", help="file stem for --out")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_guarded(_cmd_eval))

    c = sub.add_parser("calibrate", help="print the routing knob's value for a traffic target")
    c.add_argument("data")
    c.add_argument("--router", default=None)
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--strong-share", type=float)
    g.add_argument("--cost-per-1k", type=float)
    c.add_argument("--knob", choices=["max_loss", "quality", "cost_weight"],
                   default="max_loss", help="which routing knob to calibrate (default: "
                   "routing.max_loss, the gateway's default knob)")
    c.add_argument("--strong", default="gpt-4-1106-preview")
    c.add_argument("--weak", default="mixtral-8x7b-instruct-v0.1")
    c.add_argument(
        "--costs",
        default="mixtral-8x7b-instruct-v0.1=0.0006,gpt-4-1106-preview=0.02",
        help="model=USD per request,... (--cost-per-1k; --strong-share with cost_weight)",
    )
    c.set_defaults(func=_guarded(_cmd_calibrate))

    a = sub.add_parser("add-model", help="add a model profile from labelled prompts")
    a.add_argument("--router", default=None)
    a.add_argument("--data", nargs="+", required=True)
    a.add_argument("--model", required=True)
    a.add_argument("--split", default="train", choices=["train", "test", "all"])
    a.add_argument("-o", "--output", required=True)
    a.add_argument("--min-prompts", type=int, default=MIN_PROFILE_PROMPTS,
                   help=f"fewest labelled prompts to fit from (default "
                        f"{MIN_PROFILE_PROMPTS}; a few hundred are better)")
    a.set_defaults(func=_guarded(_cmd_add_model))


Handler = Callable[[argparse.Namespace], int]


def _guarded(fn: Handler) -> Handler:
    """Wrap a handler: data / model errors -> one line on stderr and exit code 2."""

    def wrapper(args: argparse.Namespace) -> int:
        from .evaluate import EvalError

        try:
            return fn(args)
        except (DataError, EvalError, ValueError, KeyError, OSError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"tierline router: error: {msg}", file=sys.stderr)
            return 2

    return wrapper


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``router`` command (handlers already map errors to exit code 2)."""
    rc: int = args.func(args)
    return rc


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m tierline.routing.learned.cli router ...``."""
    parser = argparse.ArgumentParser(prog="tierline")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
