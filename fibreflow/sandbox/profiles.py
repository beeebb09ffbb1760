"""Sandbox profiles: named limit sets loaded from ``profiles.yaml`` (see that file's header)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fibreflow.errors import ConfigError
from fibreflow.sandbox.base import SandboxProfile
from fibreflow.yamlio import LoadedYaml, load_yaml

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POSITIVE_NUMBERS = {"wall_timeout_s": float, "cpu_time_s": int, "memory_mb": int, "max_processes": int,
                     "max_file_size_mb": int, "disk_mb": int}
_FIELDS = {*_POSITIVE_NUMBERS, "network", "env_passthrough", "env", "description", "extends"}


def _check_value(doc: LoadedYaml, name: str, key: str, value: Any) -> Any:
    where = (name, key)
    if key in _POSITIVE_NUMBERS:
        kind = _POSITIVE_NUMBERS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise doc.error(f"profile '{name}': {key} must be a positive number, got {value!r}", where)
        if kind is int and value != int(value):
            raise doc.error(f"profile '{name}': {key} must be a whole number, got {value!r}", where)
        return kind(value)
    if key == "network":
        if not isinstance(value, bool):
            raise doc.error(f"profile '{name}': network must be true or false, got {value!r}", where)
        return value
    if key == "env_passthrough":
        if not isinstance(value, list) or not all(isinstance(v, str) and _ENV_NAME.match(v) for v in value):
            raise doc.error(f"profile '{name}': env_passthrough must be a list of variable names", where)
        return tuple(value)
    if key == "env":
        if not isinstance(value, dict) or not all(isinstance(k, str) and _ENV_NAME.match(k) for k in value):
            raise doc.error(f"profile '{name}': env must map variable names to strings", where)
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value.values()):
            raise doc.error(f"profile '{name}': env values must be strings", where)
        return {k: str(v) for k, v in value.items()}
    if key in ("description", "extends"):
        if not isinstance(value, str):
            raise doc.error(f"profile '{name}': {key} must be a string", where)
        return value
    known = ", ".join(sorted(_FIELDS))
    raise doc.error(f"profile '{name}': unknown key '{key}' (known: {known})", where)


def _resolve(doc: LoadedYaml, raw: Mapping[str, Any], name: str, seen: tuple[str, ...]) -> dict[str, Any]:
    body = raw[name]
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise doc.error(f"profile '{name}' must be a mapping of limits", (name,))
    values = {str(k): _check_value(doc, name, str(k), v) for k, v in body.items()}
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if parent not in raw:
        raise doc.error(f"profile '{name}' extends unknown profile '{parent}'", (name, "extends"))
    if parent in seen:
        raise doc.error(f"profile '{name}': extends forms a cycle ({' -> '.join((*seen, parent))})",
                        (name, "extends"))
    merged = _resolve(doc, raw, parent, (*seen, parent))
    merged.pop("description", None)
    if "env" in values:
        values["env"] = {**merged.get("env", {}), **values["env"]}
    return {**merged, **values}


_cache: dict[tuple[str, int], dict[str, SandboxProfile]] = {}


def load_profiles(path: str | Path | None = None) -> dict[str, SandboxProfile]:
    """Every profile in ``path`` (default: the shipped ``profiles.yaml``), by name."""
    p = Path(path or PROFILES_FILE)
    try:
        key = (str(p), p.stat().st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _cache:
        return dict(_cache[key])
    doc = load_yaml(p)
    if not isinstance(doc.data, dict) or not doc.data:
        raise doc.error("a profiles file must map profile names to their limits")
    raw = {str(k): v for k, v in doc.data.items()}
    profiles = {name: SandboxProfile(name=name, **_resolve(doc, raw, name, (name,))) for name in raw}
    if key is not None:
        _cache[key] = profiles
    return dict(profiles)


def load_profile(name_or_profile: str | SandboxProfile, *, path: str | Path | None = None) -> SandboxProfile:
    """The profile called ``name_or_profile`` (a SandboxProfile is returned as is).

    An unknown name raises ConfigError listing the known ones.
    """
    if isinstance(name_or_profile, SandboxProfile):
        return name_or_profile
    profiles = load_profiles(path)
    try:
        return profiles[name_or_profile]
    except KeyError:
        raise ConfigError(f"unknown sandbox profile '{name_or_profile}' (known: {', '.join(profiles)})",
                          path=str(path or PROFILES_FILE), key=str(name_or_profile)) from None


PROFILES: tuple[str, ...] = tuple(load_profiles())
"""Names of the shipped profiles."""

__all__ = ["PROFILES", "PROFILES_FILE", "load_profile", "load_profiles"]
