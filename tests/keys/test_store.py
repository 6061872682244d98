"""KeyStore: hash-only at rest, create / list / get / revoke, authenticate, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierline.errors import InvalidRequest
from tierline.keys.store import KeyStore, hash_secret


def test_secret_format_and_hash_only_at_rest(store: KeyStore, tmp_path: Path) -> None:
    rec, secret = store.create("alice", models=["tier:small"], budget_usd=5, period="day")
    assert secret.startswith("tl-") and len(secret) >= 35
    assert rec.id.startswith("key_") and rec.name == "alice"
    assert rec.models == ("tier:small",) and rec.budget_usd == 5.0 and rec.period == "day"
    store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in blob
    assert secret[3:].encode() not in blob
    assert hash_secret(secret).encode() in blob


def test_authenticate(store: KeyStore) -> None:
    rec, secret = store.create("bob")
    assert store.authenticate(secret) == rec
    assert store.authenticate(secret + "x") is None
    assert store.authenticate("tl-" + "A" * 43) is None
    assert store.authenticate("sk-whatever") is None
    assert store.authenticate("") is None


def test_list_get_revoke(store: KeyStore) -> None:
    a, sa = store.create("a")
    b, sb = store.create("b", rpm=10, tpm=1000)
    assert [r.id for r in store.list()] == [a.id, b.id]
    assert store.get(b.id) == b
    assert store.get("key_nope") is None
    revoked = store.revoke(a.id)
    assert revoked is not None and revoked.revoked
    assert store.authenticate(sa) is None
    assert store.authenticate(sb) == b
    assert store.revoke("key_nope") is None
    assert store.revoke(a.id) is not None  # idempotent
    assert store.count() == 2


def test_public_view_has_no_secret_or_hash(store: KeyStore) -> None:
    rec, secret = store.create("c", allow_providers="openai, anthropic")
    d = rec.public()
    assert "hash" not in d and secret not in str(d) and hash_secret(secret) not in str(d)
    assert d["allow_providers"] == ["openai", "anthropic"]


def test_changes_from_another_process_are_picked_up(tmp_path: Path) -> None:
    now = [0.0]
    server = KeyStore(tmp_path / "k.sqlite3", reload_interval=1.0, clock=lambda: now[0])
    cli = KeyStore(tmp_path / "k.sqlite3")
    try:
        rec, secret = cli.create("late")
        assert server.authenticate(secret) is None  # cached until the interval passes
        now[0] = 2.0
        assert server.authenticate(secret) == rec
        cli.revoke(rec.id)
        assert server.authenticate(secret) == rec
        now[0] = 4.0
        assert server.authenticate(secret) is None
    finally:
        server.close()
        cli.close()


@pytest.mark.parametrize(("field", "value"), [
    ("rpm", 0), ("rpm", "5"), ("tpm", -1), ("budget_usd", -1), ("budget_usd", "x"),
    ("period", "week"), ("models", [1]), ("zdr", "yes"), ("max_cost_usd", 0),
    ("region", ""), ("bogus", 1), ("models", ","), ("models", " , "),
])
def test_validation_names_the_field(store: KeyStore, field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as ei:
        store.create("x", **{field: value})
    assert ei.value.param == field
    assert store.count() == 0


def test_name_required(store: KeyStore) -> None:
    with pytest.raises(InvalidRequest) as ei:
        store.create("  ")
    assert ei.value.param == "name"
