"""The route pipeline: candidates -> hard filters -> strategy -> fallback chain.

Pure: no I/O. The gateway builds a `Constraints` from the config, the key and the
request, and gets back a `RouteDecision` whose `chain` is tried in order and whose
`reason` / `detail` explain it (header, request log, `tierline route --explain`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tierline.accounting.pricing import PICO_PER_USD, pico_per_token
from tierline.catalog.load import Catalog
from tierline.catalog.model import Deployment
from tierline.config import DEFAULT_MAX_LOSS, RoutingSettings
from tierline.errors import InvalidRequest, ModelNotFound, NoDeploymentAvailable
from tierline.routing.filters import Constraints, reject_reason
from tierline.routing.stats import LiveStats

AUTO = "auto"
EXPECTED_OUTPUT_TOKENS = 256


class QualityPredictor(Protocol):
    @property
    def profiles(self) -> list[str]: ...

    def predict(self, text: str) -> dict[str, float]: ...


@dataclass
class RouteDecision:
    chain: list[Deployment]
    reason: str
    strategy: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> Deployment:
        return self.chain[0]


def expected_cost_usd(dep: Deployment, prompt_tokens: int, max_out: int | None) -> float:
    out = min(max_out, EXPECTED_OUTPUT_TOKENS) if max_out else EXPECTED_OUTPUT_TOKENS
    pico = prompt_tokens * pico_per_token(dep.price.input) + out * pico_per_token(
        dep.price.output)
    return pico / PICO_PER_USD


class Router:
    def __init__(
        self,
        catalog: Catalog,
        settings: RoutingSettings,
        *,
        predictor: Callable[[], QualityPredictor | None] = lambda: None,
        stats: LiveStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self._predictor = predictor
        self.stats = stats or LiveStats()
        self.rng = rng or random.Random()

    # -- candidates ---------------------------------------------------------------------
    def resolve(self, name: str) -> list[Deployment]:
        """The deployments behind a requested name, in their configured order."""
        deps = self.catalog.deployments
        if name in deps:
            return [deps[name]]
        if name == AUTO:
            names = self.settings.auto if self.settings.auto is not None else list(deps)
            return [deps[n] for n in names if n in deps]
        if name in self.settings.groups:
            return [deps[n] for n in self.settings.groups[name] if n in deps]
        if name.startswith("tier:"):
            tier = name[5:]
            found = [d for d in deps.values() if d.tier == tier]
            if found:
                return found
        if "," in name:
            out: list[Deployment] = []
            for part in name.split(","):
                out.extend(d for d in self.resolve(part.strip()) if d not in out)
            return out
        raise ModelNotFound(
            f"The model {name!r} does not exist or is not configured; GET /v1/models lists "
            "the deployments, tiers (tier:NAME) and groups this gateway serves.",
            param="model")

    def profile_of(self, dep: Deployment) -> str | None:
        """The learned-router profile of a deployment: its own, its tier's, or the default."""
        if dep.profile:
            return dep.profile
        if dep.tier and dep.tier in self.settings.tier_profiles:
            return self.settings.tier_profiles[dep.tier]
        return self.settings.default_profile

    def is_last_resort(self, dep: Deployment) -> bool:
        if dep.last_resort is not None:
            return dep.last_resort
        spec = self.catalog.providers.get(dep.provider)
        return spec is not None and spec.wire == "embedded"

    # -- the pipeline -------------------------------------------------------------------
    def route(self, model: str, controls: dict[str, Any], constraints: Constraints,
              prompt_text: str | Callable[[], str] = "") -> RouteDecision:
        """`prompt_text` may be a callable: the text is built only if a prediction needs it."""
        cands = self.resolve(model)
        filtered: dict[str, str] = {}
        if controls.get("models"):
            wanted = self._wanted(controls["models"])
            for d in cands:
                if d not in wanted:
                    filtered[d.name] = "not in the 'models' control"
            cands = [d for d in cands if d in wanted]
        alive: list[Deployment] = []
        if not cands and filtered:
            raise NoDeploymentAvailable(self._explain_none(model, list(filtered), filtered))
        for d in cands:
            why = reject_reason(d, self.catalog.providers[d.provider], constraints)
            if why is None:
                alive.append(d)
            else:
                filtered[d.name] = why
        if not alive:
            raise NoDeploymentAvailable(self._explain_none(model, cands, filtered))
        strategy = controls.get("strategy") or self.settings.strategy
        sort = controls.get("sort")
        if sort == "price":
            strategy = "cheapest"
        elif sort == "latency":
            strategy = "fastest"
        elif sort == "quality":
            strategy = "learned"
        detail: dict[str, Any] = {"requested": model, "candidates": [d.name for d in cands],
                                  "filtered": filtered}
        main = [d for d in alive if not self.is_last_resort(d)]
        tail = [d for d in alive if self.is_last_resort(d)]
        if not main:
            main, tail = tail, []
        if len(main) == 1:
            ranked, why = main, "only candidate"
        elif strategy == "learned":
            ranked, why = self._learned(main, controls, constraints, prompt_text, detail,
                                        by_quality=sort == "quality")
        elif strategy == "cheapest":
            ranked, why = self._cheapest(main, constraints), "cheapest"
        elif strategy == "fastest":
            ranked, why = self._fastest(main), "fastest (EWMA TTFT)"
        elif strategy == "weighted":
            ranked, why = self._weighted(main), "weighted random"
        else:
            ranked, why = main, "ordered"
        if controls.get("fallbacks") is False:
            chain = ranked[:1]
        else:
            chain = ranked + self._cheapest(tail, constraints)
        reason = f"{strategy}: {chain[0].name} ({why})"
        if filtered:
            reason += f"; {len(filtered)} filtered"
        detail["strategy"] = strategy
        detail["chain"] = [d.name for d in chain]
        return RouteDecision(chain=chain, reason=reason, strategy=strategy, detail=detail)

    def _wanted(self, names: list[str]) -> list[Deployment]:
        """The deployments the `models` control names (400 naming it for an unknown one)."""
        out: list[Deployment] = []
        for n in names:
            try:
                out.extend(d for d in self.resolve(n) if d not in out)
            except ModelNotFound:
                raise InvalidRequest(
                    f"tierline control 'models' names {n!r}, which is not a deployment, tier "
                    "or group of this gateway (GET /v1/models lists them)",
                    param="tierline.models") from None
        return out

    @staticmethod
    def _explain_none(model: str, cands: list[Any], filtered: dict[str, str]) -> str:
        if not cands:
            return f"no deployment is available for {model!r}"
        parts = [f"{n}: {why}" for n, why in filtered.items()]
        shown = "; ".join(parts[:12]) + (f"; and {len(parts) - 12} more" if len(parts) > 12
                                         else "")
        return f"no deployment of {model!r} satisfies the request's constraints: {shown}"

    # -- strategies ---------------------------------------------------------------------
    def _cheapest(self, deps: list[Deployment], c: Constraints) -> list[Deployment]:
        return sorted(deps, key=lambda d: expected_cost_usd(d, c.prompt_tokens,
                                                            c.max_output_tokens))

    def _fastest(self, deps: list[Deployment]) -> list[Deployment]:
        # unmeasured deployments first (explore), then by EWMA time to first token
        return sorted(deps, key=lambda d: (self.stats.ttft(d.name) or 0.0))

    def _weighted(self, deps: list[Deployment]) -> list[Deployment]:
        pool = list(deps)
        out: list[Deployment] = []
        while pool:
            total = sum(d.weight for d in pool)
            if total <= 0:
                out.extend(pool)
                break
            x = self.rng.random() * total
            for i, d in enumerate(pool):
                x -= d.weight
                if x <= 0:
                    out.append(pool.pop(i))
                    break
            else:
                out.append(pool.pop())
        return out

    def _learned(self, deps: list[Deployment], controls: dict[str, Any], c: Constraints,
                 text: str | Callable[[], str], detail: dict[str, Any],
                 by_quality: bool = False,
                 ) -> tuple[list[Deployment], str]:
        predictor = self._predictor()
        profile_of = self.profile_of
        profiled = [d for d in deps if profile_of(d)]
        if predictor is None or not profiled:
            return self._cheapest(deps, c), "cheapest (no learned profiles for candidates)"
        preds = predictor.predict(text if isinstance(text, str) else text())
        q: dict[str, float | None] = {}
        cost: dict[str, float] = {}
        for d in deps:
            prof = profile_of(d)
            q[d.name] = preds.get(prof) if prof else None
            cost[d.name] = expected_cost_usd(d, c.prompt_tokens, c.max_output_tokens)
        detail["scores"] = {n: {"quality": None if v is None else round(v, 4),
                                "cost_usd": round(cost[n], 8)} for n, v in q.items()}
        # the request's knob wins over the config's: a request asking for a quality target
        # gets one even where the config routes by cost_weight (and the reverse)
        # (at most one of the three per request and per config: validated upstream)
        lam, target, loss = (controls.get(k) for k in ("cost_weight", "quality", "max_loss"))
        if lam is None and target is None and loss is None:
            s = self.settings
            lam, target, loss = s.cost_weight, s.quality, s.max_loss
            if lam is None and target is None and loss is None:
                loss = DEFAULT_MAX_LOSS
        known = [d for d in deps if q[d.name] is not None]
        unknown = sorted((d for d in deps if q[d.name] is None), key=lambda d: cost[d.name])
        # every ranking breaks ties on expected cost: deployments that share a profile share
        # a prediction, and the cheapest of equals must win, not the first in the catalog
        if by_quality:
            ranked = sorted(known, key=lambda d: (-(q[d.name] or 0.0), cost[d.name])) + unknown
            return ranked, f"highest predicted quality {q[ranked[0].name] or 0:.2f}"
        if lam is not None:
            # cost relative to the dearest candidate: a unit-free knob. With two models the
            # strong one wins iff its predicted gain exceeds lam * (1 - cost_weak/cost_strong)
            top_cost = max((cost[d.name] for d in known), default=0.0) or 1.0
            ranked = sorted(known, key=lambda d: (-((q[d.name] or 0.0)
                                                    - lam * cost[d.name] / top_cost),
                                                  cost[d.name]))
            detail["cost_weight"] = lam
            return ranked + unknown, f"max q-{lam:g}*cost/max_cost"
        if not known:
            return unknown, "no candidate has a prediction: cheapest first"
        # quality: the cheapest reaching the target; max_loss: the cheapest within `loss` of
        # the best prediction. Then the rest by predicted quality.
        best_q = max(q[d.name] or 0.0 for d in known)
        if loss is not None:
            floor = best_q - float(loss)
            detail["max_loss"] = float(loss)
        else:
            assert target is not None  # one of the three knobs is always set
            floor = float(target)
            detail["quality_target"] = floor
        good = sorted((d for d in known if (q[d.name] or 0.0) >= floor),
                      key=lambda d: cost[d.name])
        rest = sorted((d for d in known if (q[d.name] or 0.0) < floor),
                      key=lambda d: (-(q[d.name] or 0.0), cost[d.name]))
        ranked = good + rest + unknown
        top_q = q[ranked[0].name] or 0.0
        if loss is not None:
            why = (f"q={top_q:.2f} within {float(loss):g} of best {best_q:.2f}, "
                   f"cheapest of {len(good)}")
        elif good:
            why = f"q={top_q:.2f}>={floor:g}, cheapest of {len(good)} qualifying"
        else:
            why = f"none reach q>={floor:g}; best q={top_q:.2f}"
        return ranked, why
