"""The ASGI application: `create_app(config)` -> `Gateway`.

State lives on the Gateway object (no module globals): catalog, providers, router,
executor, breakers, metrics, request log. Providers are built at start-up (lifespan) from
the `tierline.providers` entry points, keyed by wire format; tests may inject their own.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote

from tierline.accounting.log import RequestLog
from tierline.catalog.load import Catalog, build_catalog
from tierline.catalog.model import ProviderSpec
from tierline.config import Config
from tierline.errors import (
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    TierlineError,
    redact_secrets,
)
from tierline.gateway.asgi import (
    Receive,
    Scope,
    Send,
    request_headers,
    send_bytes,
    send_error,
    send_json,
)
from tierline.gateway.chat import RequestIds, handle_chat
from tierline.gateway.metrics import Metrics
from tierline.keys.admin import handle_admin
from tierline.keys.auth import KeyAuth
from tierline.keys.ledger import Ledger, ledger_path
from tierline.keys.store import KeyRecord
from tierline.providers.base import Provider
from tierline.resilience.breaker import Breakers
from tierline.resilience.executor import Executor
from tierline.routing.policy import QualityPredictor, Router

log = logging.getLogger("tierline.gateway")

BUILTIN_WIRES = {
    "openai": "tierline.providers.openai_compat:OpenAICompatProvider",
    "anthropic": "tierline.providers.anthropic:AnthropicProvider",
    "replicate": "tierline.providers.replicate:ReplicateProvider",
    "embedded": "tierline.providers.embedded:EmbeddedProvider",
}


def provider_factory(wire: str) -> Callable[[ProviderSpec], Provider]:
    """The class for a wire format: a `tierline.providers` entry point (plugins) or builtin."""
    target = None
    for ep in entry_points(group="tierline.providers"):
        if ep.name == wire:
            return ep.load()  # type: ignore[no-any-return]
    target = BUILTIN_WIRES.get(wire)
    if target is None:
        raise ConfigError(f"no provider plugin for wire format {wire!r}")
    mod, _, attr = target.partition(":")
    module = __import__(mod, fromlist=[attr])
    return getattr(module, attr)  # type: ignore[no-any-return]


#: the names a restricted key may see in the model list (None: everything)
Visible = frozenset[str] | None


def _model_id_of(path: str) -> str | None:
    """The id in `/v1/models/{id}` (ids may contain `/`), else None."""
    for prefix in ("/v1/models/", "/models/"):
        if path.startswith(prefix) and len(path) > len(prefix):
            return unquote(path[len(prefix):])
    return None


def known_secrets(catalog: Catalog) -> tuple[str, ...]:
    """Every configured provider credential (keys, resolved from the environment too, and
    the values of credential-like headers: auth / key / token / secret / pass), longest
    first: an upstream that echoes one must not pass it on."""
    found: set[str] = set()
    for spec in catalog.providers.values():
        key = spec.api_key or (os.environ.get(spec.api_key_env) if spec.api_key_env else None)
        creds = [v for k, v in spec.headers.items()
                 if any(w in k.lower() for w in ("auth", "key", "token", "secret", "pass"))]
        found.update(v for v in (key, *creds) if v and len(v) >= 6)
    return tuple(sorted(found, key=len, reverse=True))


class Gateway:
    def __init__(self, config: Config, *, catalog: Catalog | None = None,
                 providers: dict[str, Provider] | None = None,
                 predictor: QualityPredictor | None = None) -> None:
        self.config = config
        self.catalog = catalog if catalog is not None else build_catalog(config)
        self.metrics = Metrics()
        r = config.resilience
        self.breakers = Breakers(failures=r.breaker_failures, window=r.breaker_window,
                                 cooldown=r.breaker_cooldown)
        self._injected = providers
        self.providers: dict[str, Provider] = {}
        self._predictor = predictor
        self._predictor_loaded = predictor is not None
        self.router = Router(self.catalog, config.routing, predictor=self.predictor)
        self.executor = Executor(self.providers, r, self.breakers)
        self.request_log: RequestLog | None = None
        # several worker processes share budgets, limits, circuits, metrics and latency stats
        # through one ledger file
        self.ledger = Ledger(ledger_path(config)) if config.server.workers > 1 else None
        self.keys = KeyAuth(config, resolve=lambda n: [d.name for d in self.router.resolve(n)],
                            ledger=self.ledger)
        self._publisher: asyncio.Task[None] | None = None
        if self.ledger is not None:
            self.breakers.on_open = self._guard(self.ledger.breaker_opened)
            self.breakers.on_close = self._guard(self.ledger.breaker_closed)
        self.new_request_id = RequestIds()
        self.secrets = known_secrets(self.catalog)
        self.started = False
        self.started_at = time.time()

    def scrub(self, err: TierlineError) -> None:
        """Take the configured credentials out of an error before it is answered or logged."""
        if self.secrets:
            err.message = redact_secrets(err.message, self.secrets)

    def predictor(self) -> QualityPredictor | None:
        if not self._predictor_loaded:
            self._predictor_loaded = True
            try:
                from tierline.routing.learned.model import LearnedRouter, default_router_path
                path = self.config.routing.router_file or default_router_path()
                self._predictor = LearnedRouter.load(path)
            except Exception as e:
                log.warning("learned router unavailable (%s); routing falls back to cheapest",
                            e)
                self._predictor = None
        return self._predictor

    # -- lifecycle ------------------------------------------------------------------------
    async def startup(self) -> None:
        if self.started:
            return
        for msg in self.catalog.skipped:
            log.info(msg)
        if self._injected is not None:
            self.providers.update(self._injected)
        else:
            for name, spec in self.catalog.providers.items():
                self.providers[name] = provider_factory(spec.wire)(spec)
        if self.config.server.request_log != "off":
            self.request_log = RequestLog(self.config.request_log_path())
        if self.config.routing.strategy == "learned":
            self.predictor()  # load the router now rather than on the first request
        if self.config.server.warmup:
            for dep in self.catalog.deployments.values():
                warm = getattr(self.providers.get(dep.provider), "warmup", None)
                if warm is not None:
                    await warm(dep)
        for name in self.catalog.deployments:
            self.metrics.health.set((name,), 1)
        if self.ledger is not None:
            self._publisher = asyncio.create_task(self._publish_metrics())
        # everything built so far lives as long as the app: keep it out of GC scans
        gc.collect()
        gc.freeze()
        self.started = True

    async def _publish_metrics(self, every: float = 1.0) -> None:
        """Worker processes, every second: this worker's metrics and latency stats into the
        ledger; the circuits other workers opened and their latency stats out of it."""
        while True:
            self._share_metrics()
            self._share_stats()
            if self.ledger is not None:
                try:
                    for name, until in self.ledger.breaker_opens(time.monotonic()):
                        self.breakers.trip(name, until)
                except sqlite3.Error as e:
                    log.warning("reading circuit states from the ledger failed: %s", e)
            await asyncio.sleep(every)

    @staticmethod
    def _guard(write: Callable[..., None]) -> Callable[..., None]:
        """A ledger write that logs instead of failing the request that triggered it."""
        def run(*args: Any) -> None:
            try:
                write(*args)
            except sqlite3.Error as e:
                log.warning("sharing a circuit state failed: %s", e)
        return run

    def _share_metrics(self) -> None:
        if self.ledger is None:
            return
        self._update_health()
        try:
            self.ledger.publish_metrics(json.dumps(self.metrics.snapshot()))
        except sqlite3.Error as e:  # metrics must never take a worker down
            log.warning("publishing metrics to the ledger failed: %s", e)

    def _share_stats(self) -> None:
        """The `fastest` strategy's statistics: this worker's own out, the other live
        workers' in (as peer values of `router.stats`)."""
        if self.ledger is None:
            return
        stats = self.router.stats
        try:
            self.ledger.publish_stats(json.dumps(stats.snapshot()))
            rows = self.ledger.peer_stats()
        except sqlite3.Error as e:  # routing keeps this worker's own stats
            log.warning("sharing latency stats through the ledger failed: %s", e)
            return
        peers = []
        for data in rows:
            try:
                peers.append(json.loads(data))
            except ValueError:
                log.warning("ignoring malformed latency stats in the ledger")
        stats.set_peers(peers)

    def _update_health(self) -> None:
        for d in self.catalog.deployments:
            self.metrics.health.set((d,), 0 if self.breakers.state(d) == "open" else 1)

    async def shutdown(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
            self._share_metrics()  # the last counts stay in the totals
        for p in self.providers.values():
            try:
                await p.aclose()
            except Exception:
                log.exception("closing a provider failed")
        await self.keys.close()
        if self.request_log is not None:
            self.request_log.close()
            self.request_log = None
        self.started = False

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        typ = scope["type"]
        if typ == "http":
            await self._http(scope, receive, send)
        elif typ == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/v1/chat/completions" or path == "/chat/completions":
            if method == "POST":
                await handle_chat(self, scope, receive, send)
                return
            return await self._method_not_allowed(send, "POST")
        if path.startswith("/admin/"):
            await handle_admin(self.keys, scope, receive, send)
            return
        routes: dict[str, Callable[[Visible], Callable[[Send], Any]]] = {
            "/v1/models": self._models, "/models": self._models,
            "/healthz": self._healthz, "/metrics": self._metrics,
            "/v1/deployments": self._deployments,
        }
        handler = routes.get(path)
        model_id = _model_id_of(path) if handler is None else None
        if model_id:
            handler = functools.partial(self._model, model_id)
        if handler is None:
            err: TierlineError = InvalidRequest(f"unknown path {path!r}", code="not_found")
            err.status = 404
            await send_error(send, err, {"x-request-id": self.new_request_id()})
            return
        if method not in ("GET", "HEAD"):
            return await self._method_not_allowed(send, "GET")
        visible: Visible = None
        if path not in ("/healthz", "/metrics"):
            try:  # the model list and deployment health are for key holders only
                headers = request_headers(scope)
                key = self.keys.authenticate(headers)
                if key is None:
                    self.keys.guard_open_mode(headers)
                elif key.models:  # a restricted key sees what it may use, nothing more
                    visible = self._visible_to(key)
            except TierlineError as e:
                await send_error(send, e, {"x-request-id": self.new_request_id()})
                return
        await handler(visible)(send)

    def _visible_to(self, key: KeyRecord) -> frozenset[str]:
        """The deployment and route names a restricted key may use."""
        names = set(self.keys.allowed_deployments(key) or ())
        tiers = {d.tier for d in self.catalog.deployments.values() if d.tier}
        for name in ["auto", *(f"tier:{t}" for t in tiers), *self.config.routing.groups]:
            if self.keys.may_use(key, name):
                names.add(name)
        return frozenset(names)

    async def _method_not_allowed(self, send: Send, allowed: str) -> None:
        err = InvalidRequest(f"method not allowed; use {allowed}", code="method_not_allowed")
        err.status = 405
        await send_error(send, err, {"allow": allowed, "x-request-id": self.new_request_id()})

    def _model_list(self, visible: Visible) -> list[dict[str, Any]]:
        data = [model_entry(d, self) for d in self.catalog.deployments.values()]
        tiers = sorted({d.tier for d in self.catalog.deployments.values() if d.tier})
        for name in ["auto", *(f"tier:{t}" for t in tiers), *self.config.routing.groups]:
            data.append({"id": name, "object": "model", "created": int(self.started_at),
                         "owned_by": "tierline", "tierline": {"kind": "route"}})
        return data if visible is None else [m for m in data if m["id"] in visible]

    def _models(self, visible: Visible) -> Callable[[Send], Any]:
        async def run(send: Send) -> None:
            await send_json(send, 200, {"object": "list", "data": self._model_list(visible)})
        return run

    def _model(self, model_id: str, visible: Visible) -> Callable[[Send], Any]:
        """`GET /v1/models/{id}` (the SDKs' `models.retrieve`); ids may contain `/`."""
        async def run(send: Send) -> None:
            for m in self._model_list(visible):
                if m["id"] == model_id:
                    await send_json(send, 200, m)
                    return
            err = ModelNotFound(f"The model {model_id!r} does not exist or is not configured",
                                param="model")
            await send_error(send, err, {"x-request-id": self.new_request_id()})
        return run

    def _deployments(self, visible: Visible) -> Callable[[Send], Any]:
        async def run(send: Send) -> None:
            out = []
            for d in self.catalog.deployments.values():
                if visible is not None and d.name not in visible:
                    continue
                s = self.router.stats  # with several workers: all of theirs combined
                out.append({"name": d.name, "provider": d.provider,
                            "health": self.breakers.state(d.name),
                            "ttft_ewma_s": s.ttft(d.name),
                            "latency_ewma_s": s.latency(d.name)})
            await send_json(send, 200, {"object": "list", "data": out,
                                        "skipped": self.catalog.skipped})
        return run

    def _healthz(self, _: Visible) -> Callable[[Send], Any]:
        async def run(send: Send) -> None:
            await send_json(send, 200, {"status": "ok",
                                        "deployments": len(self.catalog.deployments)})
        return run

    def _metrics(self, _: Visible) -> Callable[[Send], Any]:
        async def run(send: Send) -> None:
            self._update_health()
            metrics = self.metrics
            if self.ledger is not None:  # the totals of every worker
                self._share_metrics()
                metrics = Metrics.merged((json.loads(data), alive)
                                         for data, alive in self.ledger.metrics_snapshots())
            body = metrics.render().encode()
            await send_bytes(send, 200, body,
                             [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
        return run


def model_entry(d: Any, gw: Gateway) -> dict[str, Any]:
    spec = gw.catalog.providers.get(d.provider)
    return {
        "id": d.name, "object": "model", "created": int(gw.started_at), "owned_by": d.provider,
        "tierline": {
            "provider": d.provider, "upstream_model": d.model,
            "price_per_mtok": d.price.model_dump(exclude_none=True),
            "context_window": d.context_window, "capabilities": sorted(d.capabilities),
            "region": d.region or (spec.region if spec else None),
            "zero_data_retention": d.zero_data_retention if d.zero_data_retention is not None
            else (spec.zero_data_retention if spec else None),
            "trains_on_inputs": d.trains_on_inputs if d.trains_on_inputs is not None
            else (spec.trains_on_inputs if spec else None),
            "open_weight": d.open_weight, "tier": d.tier, "profile": d.profile,
        },
    }


def create_app(config: Config | None = None, **kw: Any) -> Gateway:
    return Gateway(config or Config(), **kw)
