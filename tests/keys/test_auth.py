"""KeyAuth: when keys are required, authentication, permissions, constraints, open mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierline.errors import (
    AuthenticationError,
    InvalidRequest,
    PaymentRequired,
    PermissionDenied,
    RateLimited,
)
from tierline.keys.auth import KeyAuth, merge_constraints, open_mode_problem
from tierline.keys.store import KeyStore
from tierline.routing.filters import Constraints

from .conftest import make_config

DEPLOYMENTS = {"tier:small": ["small-a", "small-b"], "tier:large": ["large-a"],
               "auto": ["small-a", "small-b", "large-a"], "cheap": ["small-b"]}


def resolve(name: str) -> list[str]:
    if name in DEPLOYMENTS:
        return DEPLOYMENTS[name]
    if name in {"small-a", "small-b", "large-a"}:
        return [name]
    raise KeyError(name)


async def test_open_mode_without_keys(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path))
    assert not auth.enabled()
    assert auth.store is None and not (tmp_path / "keys.sqlite3").exists()
    assert auth.authenticate({}) is None
    assert auth.authenticate({"authorization": "Bearer sk-placeholder"}) is None
    auth.admit(None, "anything", 10, 10)
    assert auth.constraints(None) == {}
    assert auth.reserve(None, 10**15) is None
    await auth.close()


async def test_a_store_created_after_start_up_applies(tmp_path: Path) -> None:
    """Open at start-up, then `tierline keys create` makes the store: keys are required
    within a second, and the new key works (it used to stay open until a restart)."""
    auth = KeyAuth(make_config(tmp_path))
    assert not auth.enabled()
    s = KeyStore(tmp_path / "keys.sqlite3")
    rec, secret = s.create("late")
    s.close()
    auth._store_checked -= 2  # a second has passed
    assert auth.enabled()
    assert auth.authenticate({"authorization": f"Bearer {secret}"}) == rec
    with pytest.raises(AuthenticationError):
        auth.authenticate({})
    await auth.close()


async def test_required_as_soon_as_a_key_exists(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "keys.sqlite3")
    rec, secret = s.create("a")
    s.close()
    auth = KeyAuth(make_config(tmp_path))
    assert auth.enabled()
    with pytest.raises(AuthenticationError) as ei:
        auth.authenticate({})
    assert ei.value.status == 401
    assert auth.authenticate({"authorization": f"Bearer {secret}"}) == rec
    assert auth.authenticate({"x-api-key": secret}) == rec
    bad = "tl-" + "x" * 43
    for h in ({"authorization": f"Bearer {bad}"}, {"x-api-key": bad},
              {"authorization": "Basic abc"}, {"authorization": "Bearer sk-nope"}):
        with pytest.raises(AuthenticationError) as ei:
            auth.authenticate(h)
        assert bad not in ei.value.message and "sk-nope" not in ei.value.message
    assert auth.store is not None
    auth.store.revoke(rec.id)
    with pytest.raises(AuthenticationError):
        auth.authenticate({"authorization": f"Bearer {secret}"})
    assert auth.enabled()  # a store with only revoked keys stays closed
    await auth.close()


async def test_require_flags_and_master_key(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path, master_key="m" * 32))
    assert auth.enabled()
    master = auth.authenticate({"authorization": "Bearer " + "m" * 32})
    assert master is not None and master.id == "master"
    auth.admit(master, "large-a", 10**6, 10**6)  # unrestricted
    await auth.close()
    assert KeyAuth(make_config(tmp_path, require=True)).enabled()
    off = KeyAuth(make_config(tmp_path, master_key="m" * 32, require=False))
    assert not off.enabled() and off.authenticate({}) is None
    await off.close()


async def test_permissions(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path, require=True), resolve=resolve)
    assert auth.store is not None
    rec, _ = auth.store.create("p", models=["tier:small", "large-a"])
    for ok in ("tier:small", "large-a", "small-a", "small-b", "small-a,large-a"):
        auth.admit(rec, ok, 1, 1)
    for bad in ("tier:large", "auto", "cheap", "gpt-5", "small-a,tier:large"):
        with pytest.raises(PermissionDenied) as ei:
            auth.admit(rec, bad, 1, 1)
        assert ei.value.status == 403 and repr(bad) in ei.value.message
    assert auth.constraints(rec)["allow_models"] == frozenset({"small-a", "small-b",
                                                               "large-a"})
    auth.set_resolver(None)  # without the router: exact names only
    auth.admit(rec, "tier:small", 1, 1)
    with pytest.raises(PermissionDenied):
        auth.admit(rec, "small-a", 1, 1)
    await auth.close()


async def test_admit_applies_rpm_and_tpm(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path, require=True))
    assert auth.store is not None
    rec, _ = auth.store.create("l", rpm=2, tpm=1000)
    auth.admit(rec, "x", 100, 400)
    with pytest.raises(RateLimited) as ei:
        auth.admit(rec, "x", 100, 500)  # 500 + 600 > 1000
    assert "tokens per minute" in ei.value.message and "retry-after" in ei.value.headers
    auth.admit(rec, "x", 100, None)
    with pytest.raises(RateLimited) as ei:
        auth.admit(rec, "x", 1, 1)
    assert "requests per minute" in ei.value.message
    await auth.close()


async def test_budget_hooks(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path, require=True))
    assert auth.store is not None
    rec, _ = auth.store.create("b", budget_usd=0.000001, period="day")
    r = auth.reserve(rec, 10**6)
    assert r is not None
    auth.settle(r, 10**6)
    with pytest.raises(PaymentRequired):
        auth.reserve(rec, 1)
    await auth.close()


async def test_constraints_and_merge(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path, require=True))
    assert auth.store is not None
    rec, _ = auth.store.create("c", region="eu", zdr=True, open_weight=True,
                               allow_providers=["mistral", "local"], deny_providers=["x"],
                               max_cost_usd=0.01)
    extra = auth.constraints(rec)
    assert extra == {"region": "eu", "zdr": True, "open_weight": True, "max_cost_usd": 0.01,
                     "allow_providers": frozenset({"mistral", "local"}),
                     "deny_providers": frozenset({"x"})}
    c = merge_constraints(Constraints(max_cost_usd=0.05, no_training=True,
                                      allow_providers=frozenset({"local", "openai"})), extra)
    assert c.region == "eu" and c.zdr and c.no_training and c.open_weight
    assert c.max_cost_usd == 0.01 and c.allow_providers == frozenset({"local"})
    assert c.deny_providers == frozenset({"x"})
    with pytest.raises(InvalidRequest):
        merge_constraints(Constraints(region="us"), extra)
    assert merge_constraints(Constraints(region="EU"), {"region": "eu"}).region == "eu"
    await auth.close()


def test_open_mode_problem(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    assert open_mode_problem(cfg, "127.0.0.1") is None
    assert open_mode_problem(cfg, "localhost") is None
    assert open_mode_problem(cfg, "::1") is None
    p = open_mode_problem(cfg, "0.0.0.0")
    assert p is not None and p.fatal and "refusing" in p
    w = open_mode_problem(make_config(tmp_path, require=False), "0.0.0.0")
    assert w is not None and not w.fatal and "warning" in w
    assert open_mode_problem(make_config(tmp_path, master_key="k" * 20), "0.0.0.0") is None
    s = KeyStore(tmp_path / "keys.sqlite3")
    s.create("x")
    s.close()
    assert open_mode_problem(cfg, "0.0.0.0") is None


async def test_open_mode_guard_depends_on_the_mode(tmp_path: Path) -> None:
    foreign = {"origin": "https://evil.example", "host": "evil.example"}
    auth = KeyAuth(make_config(tmp_path))
    with pytest.raises(PermissionDenied):
        auth.guard_open_mode(foreign)
    auth.guard_open_mode({"origin": "http://127.0.0.1:8080", "host": "[::1]:4000"})
    auth.guard_open_mode({})  # curl, SDKs: no Origin
    # deliberately open on a network (keys.require: false): any Host, still no browsers
    auth = KeyAuth(make_config(tmp_path, require=False))
    auth.guard_open_mode({"host": "gateway.internal:8080"})
    with pytest.raises(PermissionDenied):
        auth.guard_open_mode(foreign)
    auth = KeyAuth(make_config(tmp_path, master_key="m" * 40))  # keys in use: no guard
    auth.guard_open_mode(foreign)
    await auth.close()


async def test_open_mode_guard_refuses_malformed_names(tmp_path: Path) -> None:
    auth = KeyAuth(make_config(tmp_path))
    for h in ({"host": "[::1"}, {"origin": "http://[::1"}):
        with pytest.raises(PermissionDenied):  # a 403, not a 500 with a traceback
            auth.guard_open_mode(h)
    await auth.close()
