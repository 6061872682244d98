"""The YAML config file: pydantic models, loading, `${ENV}` interpolation, validation.

Every section is optional; no file at all means: the built-in catalog, the embedded model,
the learned router, and a request log in the data directory. Unknown keys and bad values
are refused with the file, the field path and what was expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tierline.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def data_dir() -> Path:
    """Where tierline keeps its state (request log, keys) unless configured otherwise."""
    env = os.environ.get("TIERLINE_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tierline"


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    # HTTP server: tierline's own (gateway/h1.py) or uvicorn (for what ours does not do)
    http: Literal["tierline", "uvicorn"] = "tierline"
    keep_alive_timeout: float = Field(75.0, gt=0)  # idle client connections closed after
    # tierline's server: a request's head must arrive within request_header_timeout of its
    # first byte, its body within request_body_timeout of the head (else 408 and close);
    # connections beyond max_connections (per worker) are closed at once
    request_header_timeout: float = Field(10.0, gt=0)
    request_body_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(4096, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_output_tokens_limit: int = Field(262_144, ge=1)  # larger max_tokens is refused (400)
    request_log: str | None = None  # SQLite path; default <data dir>/requests.sqlite3
    log_prompts: bool = False  # store prompt / answer text in the request log
    metrics: bool = True
    warmup: bool = False  # load embedded models at start-up instead of on first use


class CatalogSettings(_Strict):
    builtin: bool = True  # start from the shipped catalog
    files: list[str] = Field(default_factory=list)  # extra catalog files, merged in order


class RoutingSettings(_Strict):
    strategy: Literal["learned", "cheapest", "fastest", "weighted", "ordered"] = "learned"
    # The learned strategy's knob - at most one of the three (none: max_loss DEFAULT_MAX_LOSS):
    # max_loss: the cheapest candidate whose predicted P(good answer) is at most this below
    # the best candidate's - with two models, strong iff P_s - P_w > max_loss: it ranks by
    # the predicted gain, the mode every validation set prefers (docs/router-eval.md);
    max_loss: float | None = Field(None, ge=0.0, le=1.0)
    # quality: the cheapest candidate whose predicted P(good answer) reaches it;
    quality: float | None = Field(None, ge=0.0, le=1.0)
    # cost_weight: maximise P(good) - λ·cost/max_cost (cost relative to the dearest candidate,
    # so λ is unit-free: with two models, strong iff P_s - P_w > λ·(1 - c_w/c_s))
    cost_weight: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    router_file: str | None = None  # default: the router shipped in the package
    auto: list[str] | None = None  # deployments `auto` may use (default: all available)
    groups: dict[str, list[str]] = Field(default_factory=dict)  # name -> deployments
    default_profile: str | None = None  # profile for deployments with none
    # profile for deployments with none, by tier. The shipped router's RouteLLM pair (GPT-4 /
    # Mixtral) is the one scale the default maps onto: probabilities of profiles trained on
    # other data (LLMRouter's nine models) are not comparable with it. `cheap` (1-8B models,
    # the embedded one) is left unrated - rating them as Mixtral would send them most traffic
    # - so under `learned` they are fallbacks unless they are the only candidates.
    tier_profiles: dict[str, str] = Field(default_factory=lambda: {
        "frontier": "gpt-4-1106-preview", "strong": "gpt-4-1106-preview",
        "fast": "mixtral-8x7b-instruct-v0.1"})

    @field_validator("router_file")
    @classmethod
    def _expand_user(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, members in groups.items():
            why = group_name_problem(name)
            if why:
                raise ValueError(f"group name {name!r} {why}")
            if not members:
                raise ValueError(f"group {name!r} lists no deployment")
        return groups

    @model_validator(mode="after")
    def _one_knob(self) -> RoutingSettings:
        knobs = [k for k in ("max_loss", "quality", "cost_weight") if getattr(self, k) is not None]
        if len(knobs) > 1:
            raise ValueError(f"set one of routing.max_loss, routing.quality and "
                             f"routing.cost_weight, not {' and '.join(knobs)}")
        return self


def group_name_problem(name: str) -> str | None:
    """Why `name` cannot be a group (clients could not ask for it), or None."""
    if not name.strip():
        return "is empty"
    if name == "auto":
        return "is reserved (the `auto` route)"
    if name.startswith("tier:"):
        return "starts with `tier:` (reserved for tiers)"
    if "," in name:
        return "contains a comma (a requested model with commas is a list of names)"
    return None


#: the learned strategy's max_loss when no knob is configured: on the shipped router's training
#: prompts it sends as many requests to the strong model (53 %) as a quality target of 0.7 (the
#: default until 2026-11-29), but picks them by predicted gain; unlike cost_weight it does not
#: depend on how dear the dearest candidate in the pool is
DEFAULT_MAX_LOSS = 0.12


class ResilienceSettings(_Strict):
    retries: int = Field(1, ge=0, le=10)  # extra attempts on the same deployment
    backoff_base: float = Field(0.1, ge=0)  # seconds; doubled each retry, with full jitter
    backoff_max: float = Field(5.0, ge=0)
    max_retry_after: float = Field(10.0, ge=0)  # honour retry-after up to this, else fail over
    fallback_on_content_policy: bool = False
    breaker_failures: int = Field(5, ge=1)  # failures within the window open the circuit
    breaker_window: float = Field(30.0, gt=0)
    breaker_cooldown: float = Field(30.0, gt=0)  # then one half-open probe
    hedge_after: float | None = Field(None, gt=0)  # race the next deployment after this (s)


class KeysSettings(_Strict):
    master_key: str | None = None  # guards the admin API; e.g. ${TIERLINE_MASTER_KEY}
    store: str | None = None  # SQLite path; default <data dir>/keys.sqlite3
    require: bool | None = None  # default: required as soon as a master key or a key exists


class Config(_Strict):
    server: ServerSettings = ServerSettings()
    catalog: CatalogSettings = CatalogSettings()
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    deployments: list[dict[str, Any]] = Field(default_factory=list)
    routing: RoutingSettings = RoutingSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    keys: KeysSettings = KeysSettings()
    source: str = Field("<defaults>", exclude=True)

    def keys_path(self) -> Path:
        if self.keys.store:
            return Path(os.path.expanduser(self.keys.store))
        return data_dir() / "keys.sqlite3"

    def request_log_path(self) -> Path:
        if self.server.request_log:
            return Path(os.path.expanduser(self.server.request_log))
        return data_dir() / "requests.sqlite3"


#: where each unset variable is used: variable -> field paths
MissingEnv = dict[str, list[str]]


def interpolate(value: Any, missing: MissingEnv, path: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string (an empty variable takes the
    default); record in `missing` where a variable without a default is unset or empty."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            got = os.environ.get(m.group(1))
            if got:
                return got
            if m.group(2) is not None:
                return m.group(2)
            missing.setdefault(m.group(1), []).append(path or "<root>")
            return ""
        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, missing, _join(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, missing, _join(path, i)) for i, v in enumerate(value)]
    return value


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def missing_env_error(source: str, missing: MissingEnv) -> ConfigError:
    """The config error for unset `${VAR}`s: each variable and the fields that use it."""
    lines = [f"invalid config {source}:"]
    for var, paths in sorted(missing.items()):
        lines.append(f"  {', '.join(paths)}: environment variable {var} is unset or empty (set it, "
                     f"or give a default: ${{{var}:-default}}, ${{{var}:-}} for empty)")
    return ConfigError("\n".join(lines))


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        got = e.get("input")
        hint = ""
        if e["type"] == "extra_forbidden":
            hint = " (unknown key)"
        elif not isinstance(got, dict | list):
            hint = f" (got {got!r})"
        lines.append(f"  {path or '<root>'}: {e['msg']}{hint}")
    return "\n".join(lines)


def parse_config(raw: Any, source: str = "<config>") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    missing: MissingEnv = {}
    data = interpolate(raw, missing)
    if missing:
        raise missing_env_error(source, missing)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(source, e)) from None
    cfg.source = source
    check_router_settings(cfg)
    return cfg


def check_router_settings(cfg: Config) -> None:
    """A configured `routing.router_file` must be a readable router, and the profiles named
    by `routing.tier_profiles` / `routing.default_profile` must be in the router in use."""
    r = cfg.routing
    named = {f"routing.tier_profiles.{t}": p for t, p in r.tier_profiles.items()
             if "tier_profiles" in r.model_fields_set}
    if r.default_profile is not None:
        named["routing.default_profile"] = r.default_profile
    if r.router_file is None and not named:
        return  # the shipped router and its own tier profiles
    profiles = router_profiles(cfg)
    for where, profile in named.items():
        if profile not in profiles:
            raise ConfigError(f"invalid config {cfg.source}:\n  {where}: "
                              f"{unknown_profile(profile, profiles)}")


def router_profiles(cfg: Config) -> list[str]:
    """The profiles of the router `cfg` routes with (ConfigError if it cannot be read)."""
    from tierline.routing.learned.model import RouterFileError, default_router_path, read_profiles

    path = cfg.routing.router_file or default_router_path()
    try:
        return read_profiles(path)
    except RouterFileError as e:
        raise ConfigError(f"invalid config {cfg.source}:\n  routing.router_file: {e}") from None


def unknown_profile(profile: str, profiles: list[str]) -> str:
    return f"unknown router profile {profile!r} (the router has: {', '.join(profiles)})"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config from `path`, or `$TIERLINE_CONFIG`, or defaults when neither is set."""
    if path is None:
        path = os.environ.get("TIERLINE_CONFIG") or None
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {p}: {e}") from None
    return parse_config(raw, str(p))
