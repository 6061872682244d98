"""The gateway's hooks for virtual keys: authenticate, admit (permission + RPM/TPM),
per-key routing constraints, budget reserve / settle, and the open-mode safety check.

Keys are required when `keys.require` is true, or (when unset) as soon as a master key
is configured or the key store holds a key (revoked ones included: revoking every key
does not reopen the gateway). Otherwise the gateway runs open: requests without a key
pass unrestricted, and a key that is given must still be valid.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from tierline.config import Config
from tierline.errors import AuthenticationError, InvalidRequest, PermissionDenied
from tierline.keys.budget import Budgets, Reservation, request_log_spend
from tierline.keys.ledger import Ledger, SharedBudgets, SharedLimits
from tierline.keys.limits import Admission, Limits
from tierline.keys.store import KEY_PREFIX, KeyRecord, KeyStore
from tierline.routing.filters import Constraints

MASTER_ID = "master"
Resolver = Callable[[str], Iterable[str]]  # requested name -> deployment names


def bearer(headers: dict[str, str]) -> str | None:
    """The credential from `authorization: Bearer X` or `x-api-key: X` (lower-case keys)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def _store_has_keys(config: Config) -> bool:
    path = config.keys_path()
    if not path.exists():
        return False
    store = KeyStore(path)
    try:
        return store.count() > 0
    finally:
        store.close()


class KeyAuth:
    def __init__(self, config: Config, *, store: KeyStore | None = None,
                 budgets: Budgets | SharedBudgets | None = None,
                 limits: Limits | SharedLimits | None = None,
                 resolve: Resolver | None = None, ledger: Ledger | None = None) -> None:
        self.config = config
        self.master_key = config.keys.master_key or None
        path = config.keys_path()
        if store is None and (path.exists() or self.master_key or config.keys.require):
            store = KeyStore(path)
        self.store = store
        # several worker processes: budgets and limits live in the ledger file they share
        if budgets is None:
            log_path = (config.request_log_path() if config.server.request_log != "off"
                        else None)
            source = request_log_spend(log_path) if log_path else None
            budgets = SharedBudgets(ledger, source) if ledger is not None else Budgets(source)
        self.budgets: Budgets | SharedBudgets = budgets
        self.limits: Limits | SharedLimits = (
            limits or (SharedLimits(ledger) if ledger is not None else Limits()))
        self._resolve = resolve
        self._master = KeyRecord(id=MASTER_ID, name="master key")
        self._store_path = path
        self._store_checked = time.monotonic()

    def set_resolver(self, resolve: Resolver | None) -> None:
        """How to expand tiers / groups / `auto` into deployment names (the router's)."""
        self._resolve = resolve

    def enabled(self) -> bool:
        """Whether every request must carry a valid key."""
        req = self.config.keys.require
        if req is not None:
            return req
        if self.store is None:
            self._adopt_new_store()
        return bool(self.master_key) or (self.store is not None and self.store.count() > 0)

    def _adopt_new_store(self) -> None:
        """Open mode, no key store at start-up: `tierline keys create` may have made one
        since (checked at most once a second) - its keys then apply at once."""
        now = time.monotonic()
        if now - self._store_checked < 1.0:
            return
        self._store_checked = now
        if self._store_path.exists():
            self.store = KeyStore(self._store_path)

    # -- authentication ---------------------------------------------------------------------
    def is_master(self, token: str | None) -> bool:
        if not self.master_key or not token:
            return False
        return hmac.compare_digest(token.encode(), self.master_key.encode())

    def authenticate(self, headers: dict[str, str]) -> KeyRecord | None:
        token = bearer(headers)
        if token is None:
            if self.enabled():
                raise AuthenticationError(
                    "missing API key: send `Authorization: Bearer <key>`",
                    code="missing_api_key")
            return None
        if self.is_master(token):
            return self._master
        rec = self.store.authenticate(token) if self.store is not None else None
        if rec is None:
            if not self.enabled() and not token.startswith(KEY_PREFIX):
                # open mode: a client library's placeholder key ("sk-...", "none") is fine
                return None
            raise AuthenticationError("invalid or revoked API key")
        return rec

    def guard_open_mode(self, headers: dict[str, str]) -> None:
        """With no keys required, anyone who reaches the port may spend the provider
        credits - meant for this machine only. A web page the operator visits could still
        post to it from the browser (a cross-site `text/plain` POST needs no preflight) or,
        via DNS rebinding, read it: such requests carry a foreign `Origin`, or a `Host` that
        is not a loopback name, and are refused (403). Called only for requests without a
        valid key, so it costs nothing when keys are in use."""
        if self.enabled():
            return
        origin = headers.get("origin")
        if origin is not None and not _loopback_origin(origin):
            raise PermissionDenied(
                f"cross-origin request from {origin!r} refused: this gateway requires no API "
                "key, so it only serves clients on this machine (set keys.master_key and "
                "use keys to serve browsers)", code="cross_origin_refused")
        host = headers.get("host")
        if host is not None and self.config.keys.require is None \
                and not _loopback_host(host):
            raise PermissionDenied(
                f"Host {host!r} refused: this gateway requires no API key and serves only "
                "loopback names (localhost, 127.0.0.1, [::1])", code="host_refused")

    # -- admission --------------------------------------------------------------------------
    def allowed_deployments(self, key: KeyRecord) -> frozenset[str] | None:
        """The deployments the key may reach (None = all / unknown without a resolver)."""
        if not key.models or self._resolve is None:
            return None
        out: set[str] = set()
        for name in key.models:
            try:
                out.update(self._resolve(name))
            except Exception:  # a group / tier that no longer exists allows nothing
                continue
        return frozenset(out)

    def may_use(self, key: KeyRecord, model: str) -> bool:
        if not key.models or model in key.models:
            return True
        if "," in model:
            return all(self.may_use(key, p.strip()) for p in model.split(",") if p.strip())
        allowed = self.allowed_deployments(key)
        if allowed is None or self._resolve is None:
            return False
        try:
            deps = list(self._resolve(model))
        except Exception:
            return False
        # a single deployment reachable through an allowed tier / group is fine
        return deps == [model] and model in allowed

    def admit(self, key: KeyRecord | None, model: str, prompt_tokens: int,
              max_output_tokens: int | None) -> Admission | None:
        """Permission (403) and RPM / TPM (429) for one request; `settle_tokens` trues the
        TPM window up to the tokens the request really used."""
        if key is None:
            return None
        if not self.may_use(key, model):
            raise PermissionDenied(
                f"this API key may not use model {model!r}; allowed: "
                f"{', '.join(key.models)}", param="model")
        return self.limits.admit(key, prompt_tokens + (max_output_tokens or 0))

    def settle_tokens(self, admission: Admission | None, used: int) -> None:
        if admission is not None:
            self.limits.settle(admission, used)

    def constraints(self, key: KeyRecord | None) -> dict[str, Any]:
        """The key's routing constraints, named as the fields of `Constraints`."""
        if key is None:
            return {}
        out: dict[str, Any] = {}
        if key.region is not None:
            out["region"] = key.region
        for f in ("zdr", "no_training", "open_weight"):
            if getattr(key, f):
                out[f] = True
        if key.max_cost_usd is not None:
            out["max_cost_usd"] = key.max_cost_usd
        if key.allow_providers is not None:
            out["allow_providers"] = frozenset(key.allow_providers)
        if key.deny_providers:
            out["deny_providers"] = frozenset(key.deny_providers)
        allowed = self.allowed_deployments(key)
        if allowed is not None:
            out["allow_models"] = allowed
        return out

    # -- budgets ------------------------------------------------------------------------------
    def reserve(self, key: KeyRecord | None, worst_pico: int) -> Reservation | None:
        if key is None:
            return None
        return self.budgets.reserve(key, worst_pico)

    def settle(self, reservation: Reservation | None, actual_pico: int) -> None:
        self.budgets.settle(reservation, actual_pico)

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def merge_constraints(c: Constraints, extra: dict[str, Any]) -> Constraints:
    """Tighten `c` with a key's constraints: the stricter of the two always wins."""
    region = extra.get("region")
    if region is not None:
        if c.region is not None and c.region.lower() != region.lower():
            raise InvalidRequest(f"this API key is restricted to region {region!r}",
                                 param="tierline.region")
        c.region = region
    c.zdr = c.zdr or bool(extra.get("zdr"))
    c.no_training = c.no_training or bool(extra.get("no_training"))
    c.open_weight = c.open_weight or bool(extra.get("open_weight"))
    mc = extra.get("max_cost_usd")
    if mc is not None:
        c.max_cost_usd = mc if c.max_cost_usd is None else min(c.max_cost_usd, mc)
    ap = extra.get("allow_providers")
    if ap is not None:
        c.allow_providers = ap if c.allow_providers is None else c.allow_providers & ap
    c.deny_providers = c.deny_providers | extra.get("deny_providers", frozenset())
    am = extra.get("allow_models")
    if am is not None:
        c.allow_models = am if c.allow_models is None else c.allow_models & am
    return c


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def _loopback_origin(origin: str) -> bool:
    try:
        return is_loopback(urlsplit(origin).hostname or "")
    except ValueError:  # "http://[::1" - not a loopback name
        return False


@functools.lru_cache(maxsize=256)
def _loopback_host(host: str) -> bool:
    """A `Host` header value ("127.0.0.1:8000", "[::1]:80", "localhost") names loopback?"""
    try:
        return is_loopback(urlsplit(f"//{host}").hostname or "")
    except ValueError:  # "[::1" - not a loopback name
        return False


class OpenModeProblem(str):
    """The text of an open-mode warning; `fatal` means: refuse to start."""

    fatal: bool = False


def open_mode_problem(config: Config, host: str) -> OpenModeProblem | None:
    """None when serving on `host` is safe; else the warning (or, `.fatal`, the error)."""
    require = config.keys.require
    if require is True or config.keys.master_key:
        return None
    if require is None and _store_has_keys(config):
        return None
    if is_loopback(host):
        return None
    if require is False:
        return OpenModeProblem(
            f"warning: serving on {host} with no API keys required (keys.require: false): "
            "anyone who can reach this port can spend your provider credits")
    p = OpenModeProblem(
        f"refusing to serve on non-loopback host {host} without API keys: set "
        "keys.master_key (and create keys with `tierline keys create`), or set "
        "keys.require: false to run open deliberately")
    p.fatal = True
    return p
