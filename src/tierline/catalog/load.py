"""Build the effective catalog: the shipped file, extra catalog files, then the config's
`providers` / `deployments` sections, each merged over the previous by name.

A provider whose API key is missing is reported (once, in `Catalog.skipped`) and its
deployments are left out; it is not an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.config import (
    Config,
    MissingEnv,
    format_validation_error,
    interpolate,
    missing_env_error,
    router_profiles,
    unknown_profile,
)
from tierline.errors import ConfigError


@dataclass
class Catalog:
    providers: dict[str, ProviderSpec]
    deployments: dict[str, Deployment]  # only deployments of usable providers
    skipped: list[str] = field(default_factory=list)  # human-readable reasons
    date: str | None = None


def builtin_catalog_text() -> str:
    return (resources.files("tierline.catalog") / "catalog.yaml").read_text(encoding="utf-8")


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {source}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid catalog {source}: the top level must be a mapping")
    return raw


def _merge_layer(
    providers: dict[str, dict[str, Any]],
    deployments: dict[str, dict[str, Any]],
    raw_providers: Any,
    raw_deployments: Any,
    source: str,
) -> None:
    if raw_providers is not None:
        if not isinstance(raw_providers, dict):
            raise ConfigError(f"invalid config {source}: providers: expected a mapping")
        for name, spec in raw_providers.items():
            if not isinstance(spec, dict):
                raise ConfigError(f"invalid config {source}: providers.{name}: expected a mapping")
            providers[str(name)] = {**providers.get(str(name), {}), **spec, "name": str(name)}
    if raw_deployments is not None:
        if not isinstance(raw_deployments, list):
            raise ConfigError(f"invalid config {source}: deployments: expected a list")
        for i, dep in enumerate(raw_deployments):
            if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
                raise ConfigError(
                    f"invalid config {source}: deployments.{i}: expected a mapping with a name")
            name = dep["name"]
            merged = {**deployments.get(name, {}), **dep}
            merged["_source"] = f"{source}: deployments.{i}"
            deployments[name] = merged


def build_catalog(config: Config, *, builtin_text: str | None = None) -> Catalog:
    providers: dict[str, dict[str, Any]] = {}
    deployments: dict[str, dict[str, Any]] = {}
    date: str | None = None
    layers: list[tuple[dict[str, Any], str]] = []
    if config.catalog.builtin:
        text = builtin_text if builtin_text is not None else builtin_catalog_text()
        raw = _read_yaml(text, "<builtin catalog>")
        date = str(raw.get("date")) if raw.get("date") else None
        layers.append((raw, "<builtin catalog>"))
    for f in config.catalog.files:
        p = Path(f).expanduser()
        try:
            layers.append((_read_yaml(p.read_text(encoding="utf-8"), str(p)), str(p)))
        except OSError as e:
            raise ConfigError(f"cannot read catalog {p}: {e.strerror}") from None
    for raw, source in layers:
        missing_env: MissingEnv = {}
        raw = interpolate(raw, missing_env)
        if missing_env:
            raise missing_env_error(source, missing_env)
        _merge_layer(providers, deployments, raw.get("providers"), raw.get("deployments"), source)
    _merge_layer(providers, deployments, config.providers or None, config.deployments or None,
                 config.source)

    specs: dict[str, ProviderSpec] = {}
    for name, data in providers.items():
        try:
            specs[name] = ProviderSpec.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(config.source, e, f"providers.{name}")) \
                from None

    usable: dict[str, ProviderSpec] = {}
    skipped: list[str] = []
    for name, spec in specs.items():
        has_key = bool(spec.api_key) or bool(spec.api_key_env and os.environ.get(spec.api_key_env))
        if spec.requires_key and not has_key:
            env = spec.api_key_env or "api_key"
            skipped.append(f"provider {name!r} skipped: {env} is not set")
            continue
        if spec.wire != "embedded" and not spec.base_url:
            skipped.append(f"provider {name!r} skipped: no base_url")
            continue
        usable[name] = spec

    deps: dict[str, Deployment] = {}
    profiled: list[tuple[Deployment, str]] = []
    for name, data in deployments.items():
        where = str(data.pop("_source", config.source))
        try:
            dep = Deployment.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(where.split(": ")[0], e,
                                                      where.split(": ")[-1])) from None
        if dep.provider not in specs:
            raise ConfigError(f"invalid config {where}: provider {dep.provider!r} of deployment "
                              f"{name!r} is not defined")
        if specs[dep.provider].wire == "embedded":
            # advertise and route on the window a request gets, not the model's trained one
            dep = dep.as_embedded()
        if dep.provider in usable:
            deps[name] = dep
        if dep.profile is not None:
            profiled.append((dep, where))
    _check_profiles(config, profiled)
    _check_route_names(config, set(deployments))
    return Catalog(providers=usable, deployments=deps, skipped=skipped, date=date)


def _check_profiles(config: Config, profiled: list[tuple[Deployment, str]]) -> None:
    """Every deployment's `profile` is a profile of the router in use."""
    if not profiled:
        return
    profiles = router_profiles(config)
    for dep, where in profiled:
        if dep.profile not in profiles:
            source, _, path = where.rpartition(": ")
            raise ConfigError(f"invalid config {source or config.source}:\n  {path}.profile: "
                              f"{unknown_profile(str(dep.profile), profiles)}")


def _check_route_names(config: Config, known: set[str]) -> None:
    """`routing.auto` and `routing.groups` name catalog deployments (whether or not their
    provider is usable), and no group is named like a deployment."""
    r = config.routing
    problems = [f"routing.auto: unknown deployment {n!r}" for n in r.auto or [] if n not in known]
    for group, members in r.groups.items():
        if group in known:
            problems.append(f"routing.groups: group name {group!r} is a deployment's name")
        problems += [f"routing.groups.{group}: unknown deployment {n!r}"
                     for n in members if n not in known]
    if problems:
        raise ConfigError("\n  ".join([f"invalid config {config.source}:", *problems]))
