"""Virtual API keys in SQLite (WAL).

A key is `tl-` + 43 url-safe random characters, shown once at creation; only its sha256
is stored (enough for a 256-bit random secret) and compared in constant time. Lookups on
the hot path hit an in-memory cache (hash -> record), rebuilt after every change made
through this store and, at most once per `reload_interval`, when another process (the
CLI) has committed to the file (`PRAGMA data_version`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from tierline.errors import InvalidRequest
from tierline.routing.controls import KEY_DEFAULTS, check_one_knob, coerce_control

Period = Literal["day", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "month", "total")
KEY_PREFIX = "tl-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What a key may do. Never holds the secret nor its hash."""

    id: str
    name: str
    created: float = 0.0
    revoked: bool = False
    models: tuple[str, ...] = ()  # deployments / tier:X / groups / auto; empty = all
    region: str | None = None
    zdr: bool = False
    no_training: bool = False
    open_weight: bool = False
    allow_providers: tuple[str, ...] | None = None
    deny_providers: tuple[str, ...] = ()
    max_cost_usd: float | None = None  # per request
    budget_usd: float | None = None
    period: Period = "month"
    rpm: int | None = None
    tpm: int | None = None
    # routing defaults (controls of tierline.routing.controls.KEY_DEFAULTS, e.g. max_loss,
    # sort); a request's own controls win
    routing: Mapping[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """JSON-able view for the admin API and the CLI."""
        d = asdict(self)
        d["models"] = list(self.models)
        d["deny_providers"] = list(self.deny_providers)
        d["routing"] = dict(self.routing)
        if self.allow_providers is not None:
            d["allow_providers"] = list(self.allow_providers)
        return d


SPEC_FIELDS = ("models", "region", "zdr", "no_training", "open_weight", "allow_providers",
               "deny_providers", "max_cost_usd", "budget_usd", "period", "rpm", "tpm",
               "routing")


def _names(field: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [p for p in (s.strip() for s in v.split(",")) if p]
        if not v:  # "," or " ": a typo, not "all" (omit the field for that)
            raise InvalidRequest(f"{field} names nothing; omit it to leave it unrestricted",
                                 param=field)
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x for x in v):
        raise InvalidRequest(f"{field} must be a list of non-empty strings", param=field)
    return tuple(dict.fromkeys(v))


def _bool(field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InvalidRequest(f"{field} must be a boolean", param=field)
    return v


def _pos_int(field: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidRequest(f"{field} must be a positive integer", param=field)
    return v


def _usd(field: str, v: Any, *, allow_zero: bool) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or v < 0 or (v == 0 and not allow_zero):
        what = "a non-negative" if allow_zero else "a positive"
        raise InvalidRequest(f"{field} must be {what} number (USD)", param=field)
    return float(v)


def _routing(v: Any) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InvalidRequest("routing must be an object of routing controls", param="routing")
    for k, x in v.items():
        if k not in KEY_DEFAULTS:
            raise InvalidRequest(f"routing.{k}: a key's routing defaults are "
                                 f"{', '.join(KEY_DEFAULTS)}", param=f"routing.{k}")
        coerce_control(k, x, f"routing.{k}")
    check_one_knob(v, "routing.")
    return dict(v)


def normalize_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate the settable fields of a key; 400 naming the first bad field."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in SPEC_FIELDS:
            raise InvalidRequest(f"unknown field {k!r}", param=k)
        if k in ("models", "deny_providers"):
            out[k] = _names(k, v) if v is not None else ()
        elif k == "allow_providers":
            out[k] = _names(k, v) if v is not None else None
        elif k == "region":
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise InvalidRequest("region must be a non-empty string", param=k)
            out[k] = v.strip() if isinstance(v, str) else None
        elif k in ("zdr", "no_training", "open_weight"):
            out[k] = _bool(k, v)
        elif k in ("rpm", "tpm"):
            out[k] = _pos_int(k, v)
        elif k == "budget_usd":
            out[k] = _usd(k, v, allow_zero=True)
        elif k == "max_cost_usd":
            out[k] = _usd(k, v, allow_zero=False)
        elif k == "routing":
            out[k] = _routing(v)
        elif k == "period":
            if v not in PERIODS:
                raise InvalidRequest("period must be one of day, month, total", param=k)
            out[k] = v
    return out


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 43 chars, 256 bits


def new_id() -> str:
    return "key_" + secrets.token_hex(4)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    kid, name, created, revoked, spec = row
    s = orjson.loads(spec)
    return KeyRecord(
        id=kid, name=name, created=created, revoked=bool(revoked),
        models=tuple(s.get("models") or ()), region=s.get("region"),
        zdr=bool(s.get("zdr")), no_training=bool(s.get("no_training")),
        open_weight=bool(s.get("open_weight")),
        allow_providers=tuple(s["allow_providers"]) if s.get("allow_providers") is not None
        else None,
        deny_providers=tuple(s.get("deny_providers") or ()),
        max_cost_usd=s.get("max_cost_usd"), budget_usd=s.get("budget_usd"),
        period=cast(Period, s.get("period") or "month"), rpm=s.get("rpm"), tpm=s.get("tpm"),
        routing=s.get("routing") or {})


def _spec_json(r: KeyRecord) -> bytes:
    d = r.public()
    return orjson.dumps({k: d[k] for k in SPEC_FIELDS})


class KeyStore:
    """The keys file. Thread-safe; the hot path (`authenticate`) is a dict lookup."""

    def __init__(self, path: str | Path, *, reload_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(SCHEMA)
        self._reload_interval = reload_interval
        self._clock = clock
        self._by_hash: dict[str, tuple[str, KeyRecord]] = {}
        self._by_id: dict[str, KeyRecord] = {}
        self._version = -1
        self._checked = 0.0
        self._reload()

    # -- cache ----------------------------------------------------------------------------
    def _reload(self) -> None:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, created, revoked, spec, hash FROM keys ORDER BY created, id"
            ).fetchall()
            self._version = self._data_version()
            self._by_hash = {r[5]: (r[5], _record(r[:5])) for r in rows}
            self._by_id = {rec.id: rec for _, rec in self._by_hash.values()}
            self._checked = self._clock()

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def maybe_reload(self) -> None:
        """Pick up changes committed by other processes, at most once per interval."""
        now = self._clock()
        if now - self._checked < self._reload_interval:
            return
        with self._lock:
            self._checked = now
            changed = self._data_version() != self._version
        if changed:
            self._reload()

    # -- API ------------------------------------------------------------------------------
    def create(self, name: str, **spec: Any) -> tuple[KeyRecord, str]:
        """A new key: (record, secret). The secret is not stored and cannot be shown again."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("name must be a non-empty string", param="name")
        fields = normalize_spec(spec)
        secret = new_secret()
        for _ in range(8):
            rec = KeyRecord(id=new_id(), name=name.strip(), created=time.time(), **fields)
            try:
                with self._lock:
                    self._conn.execute(
                        "INSERT INTO keys (id, hash, name, created, revoked, spec) "
                        "VALUES (?, ?, ?, ?, 0, ?)",
                        (rec.id, hash_secret(secret), rec.name, rec.created,
                         _spec_json(rec).decode()))
            except sqlite3.IntegrityError:  # id collision: draw another
                continue
            self._reload()
            return rec, secret
        raise RuntimeError("could not allocate a key id")

    def list(self) -> list[KeyRecord]:
        self.maybe_reload()
        return list(self._by_id.values())

    def count(self) -> int:
        self.maybe_reload()
        return len(self._by_id)

    def get(self, key_id: str) -> KeyRecord | None:
        self.maybe_reload()
        return self._by_id.get(key_id)

    def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke a key (idempotent); None when no such key."""
        with self._lock:
            cur = self._conn.execute("UPDATE keys SET revoked = 1 WHERE id = ?", (key_id,))
            found = cur.rowcount > 0
        if not found:
            return None
        self._reload()
        return self._by_id.get(key_id)

    def update(self, key_id: str, **spec: Any) -> KeyRecord | None:
        fields = normalize_spec(spec)
        rec = self.get(key_id)
        if rec is None:
            return None
        new = replace(rec, **fields)
        with self._lock:
            self._conn.execute("UPDATE keys SET spec = ? WHERE id = ?",
                               (_spec_json(new).decode(), key_id))
        self._reload()
        return self._by_id.get(key_id)

    def authenticate(self, secret: str) -> KeyRecord | None:
        """The live (not revoked) key for `secret`, or None. No SQL unless a reload is due."""
        if not secret.startswith(KEY_PREFIX):
            return None
        self.maybe_reload()
        h = hash_secret(secret)
        hit = self._by_hash.get(h)
        if hit is None:
            return None
        stored, rec = hit
        # hashes of 256-bit secrets leak nothing through lookup timing; still compare the
        # stored digest in constant time rather than trusting the dict's equality
        if not hmac.compare_digest(stored, h) or rec.revoked:
            return None
        return rec

    def close(self) -> None:
        with self._lock:
            self._conn.close()
