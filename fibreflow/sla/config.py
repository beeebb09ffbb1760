"""The SLA definitions file (``data/slas.example.yaml`` shows every part).

::

    slas:                       # name -> threshold (seconds for freshness, latency, lag)
      delivery_reports_fresh: 300
    checks:                     # name -> how that SLA is measured (one per SLA)
      delivery_reports_fresh:
        type: sql_freshness     # one of fibreflow.sla.checks.CHECK_TYPES
        url: "${NEON_DATABASE_URL}"
        query: "SELECT max(updated_at) FROM delivery_reports"
        timeout: 5              # optional, seconds; default monitoring.timeout
        warn_after: 240         # optional: status warn above this
        error_after: 300        # optional: status violation above this (default: the threshold)
    alerts: [...]               # fibreflow.sla.model.AlertRule entries
    monitoring: {...}           # fibreflow.sla.model.MonitoringSettings

Everything is validated at load, with errors naming the file, line and key. ``${VAR}``
references are *not* expanded here: the monitor expands them when it runs a check, so a
missing variable fails that one check (status ``error`` naming the variable) and not the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from fibreflow.errors import ConditionError, ConfigError
from fibreflow.sla.checks import CHECK_PARAMS, CHECK_TYPES, validate_params
from fibreflow.sla.conditions import parse_condition
from fibreflow.sla.messages import check_template
from fibreflow.sla.model import MAX_TIMEOUT_S, AlertRule, MonitoringSettings
from fibreflow.yamlio import LoadedYaml, load_yaml

if TYPE_CHECKING:
    from fibreflow.config import Settings

TOP_LEVEL_KEYS = ("slas", "checks", "alerts", "monitoring")
COMMON_CHECK_KEYS = ("type", "timeout", "warn_after", "error_after", "description")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOURCE_TAGS = {"sql", "http_json", "file"}


@dataclass(frozen=True)
class CheckSpec:
    """One SLA and how it is measured."""

    name: str
    type: str
    threshold: float
    params: Mapping[str, Any]
    """The check's own parameters as written (``${VAR}`` not yet expanded)."""
    timeout: float
    warn_after: float | None = None
    error_after: float | None = None
    description: str | None = None

    @property
    def violation_above(self) -> float:
        """Values above this are violations: ``error_after`` if given, else the threshold."""
        return self.error_after if self.error_after is not None else self.threshold


@dataclass(frozen=True)
class SLAConfig:
    """A loaded, validated SLA definitions file."""

    slas: dict[str, float]
    checks: dict[str, CheckSpec]
    alerts: list[AlertRule] = field(default_factory=list)
    monitoring: MonitoringSettings = field(default_factory=lambda: MonitoringSettings.model_validate({}))
    path: Path | None = None

    def select(self, names: Iterable[str] | None = None) -> list[CheckSpec]:
        """The checks for ``names`` (all when None); an unknown name is a ConfigError listing the known."""
        if names is None:
            return list(self.checks.values())
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self.checks]
        if unknown:
            raise ConfigError(f"unknown SLA {', '.join(map(repr, unknown))}; known: {', '.join(self.checks)}",
                              path=str(self.path) if self.path else None, key=unknown[0])
        return [self.checks[n] for n in wanted]


def load_sla_config(path: str | Path, *, settings: Settings | None = None) -> SLAConfig:
    """Load and validate an SLA definitions file; any fault raises ConfigError (file, line, key)."""
    return parse_sla_config(load_yaml(path), settings=settings)


def sla_config_from_dict(data: Mapping[str, Any], *, settings: Settings | None = None,
                         source: str = "<sla config>") -> SLAConfig:
    """Validate SLA definitions given as a dict (the demo and benchmarks build theirs in code)."""
    return parse_sla_config(LoadedYaml(Path(source), dict(data), {}), settings=settings, has_path=False)


def parse_sla_config(loaded: LoadedYaml, *, settings: Settings | None = None,
                     has_path: bool = True) -> SLAConfig:
    """Validate an already parsed document (see :func:`load_sla_config`)."""
    data = loaded.data
    if data is None:
        raise loaded.error("empty SLA file: expected a 'slas:' mapping of name -> threshold")
    if not isinstance(data, Mapping):
        raise loaded.error("the top level must be a mapping with keys " + ", ".join(TOP_LEVEL_KEYS))
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise loaded.error(f"unknown key '{key}' (known: {', '.join(TOP_LEVEL_KEYS)})", [key])

    monitoring = _monitoring(loaded, data.get("monitoring"), settings)
    slas = _slas(loaded, data.get("slas"))
    checks = _checks(loaded, data.get("checks"), slas, monitoring)
    for name in slas:
        if name not in checks:
            raise loaded.error(f"SLA '{name}' has no check: add checks.{name} with a type "
                               f"(one of {', '.join(CHECK_TYPES)})", ["slas", name])
    alerts = _alerts(loaded, data.get("alerts"), slas)
    for i, window in enumerate(monitoring.maintenance_windows):
        for name in window.slas or ():
            if name not in slas:
                raise loaded.error(f"maintenance window names unknown SLA '{name}' (known: {', '.join(slas)})",
                                   ["monitoring", "maintenance_windows", i, "slas"])
    return SLAConfig(slas=slas, checks=checks, alerts=alerts, monitoring=monitoring,
                     path=loaded.path if has_path else None)


def _pydantic_error(loaded: LoadedYaml, exc: ValidationError, prefix: Sequence[Any], what: str,
                    model: type[BaseModel]) -> ConfigError:
    # a misspelt key shows as both unknown and missing: the unknown one is the useful message
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = [p for i, p in enumerate(err["loc"])
           if not (p in _SOURCE_TAGS and i > 0 and err["loc"][i - 1] in ("source", "target"))]
    keys = [*prefix, *loc]
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) if len(loc) == 1 else ""
        msg = f"unknown key '{dotted}' in {what}" + (f" (known: {known})" if known else "")
    elif err["type"] == "missing":
        msg = f"{what} needs '{dotted}'"
    else:
        msg = f"{what}: {dotted + ': ' if dotted else ''}{err['msg']}"
    return loaded.error(msg, keys)


def _number(loaded: LoadedYaml, value: Any, keys: Sequence[Any], *, positive: bool,
            maximum: float | None = None) -> float:
    where = ".".join(map(str, keys))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise loaded.error(f"{where} must be a number of seconds, got {value!r}", keys)
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise loaded.error(f"{where} must be a finite number, got {value!r}", keys)
    if number < 0 or (positive and number == 0):
        raise loaded.error(f"{where} must be {'above' if positive else 'at least'} 0, got {value!r}", keys)
    if maximum is not None and number > maximum:
        raise loaded.error(f"{where} must be at most {maximum:g}, got {value!r}", keys)
    return number


def _monitoring(loaded: LoadedYaml, raw: Any, settings: Settings | None) -> MonitoringSettings:
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise loaded.error("monitoring must be a mapping", ["monitoring"])
    try:
        monitoring = MonitoringSettings.model_validate(dict(raw))
    except ValidationError as exc:
        raise _pydantic_error(loaded, exc, ["monitoring"], "monitoring", MonitoringSettings) from None
    if "timeout" not in raw:
        if settings is None:
            from fibreflow.config import load_settings

            settings = load_settings()
        monitoring = monitoring.model_copy(update={"timeout": settings.sla.check_timeout_s})
    return monitoring


def _slas(loaded: LoadedYaml, raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise loaded.error("'slas:' must be a non-empty mapping of SLA name -> threshold", ["slas"])
    slas: dict[str, float] = {}
    for name, threshold in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise loaded.error(f"SLA name {name!r} must be an identifier (letters, digits, _)", ["slas", name])
        slas[name] = _number(loaded, threshold, ["slas", name], positive=True)
    return slas


def _checks(loaded: LoadedYaml, raw: Any, slas: Mapping[str, float],
            monitoring: MonitoringSettings) -> dict[str, CheckSpec]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise loaded.error("'checks:' must be a mapping of SLA name -> check", ["checks"])
    checks: dict[str, CheckSpec] = {}
    for name, body in raw.items():
        keys: list[Any] = ["checks", name]
        if name not in slas:
            raise loaded.error(f"check '{name}' has no SLA: add '{name}: <threshold>' under slas:", keys)
        if not isinstance(body, Mapping):
            raise loaded.error(f"check '{name}' must be a mapping with a 'type'", keys)
        check_type = body.get("type")
        if check_type is None:
            raise loaded.error(f"check '{name}' needs a 'type' (one of {', '.join(CHECK_TYPES)})", keys)
        if check_type not in CHECK_TYPES:
            raise loaded.error(f"unknown check type {check_type!r} in check '{name}' "
                               f"(known: {', '.join(CHECK_TYPES)})", [*keys, "type"])
        params = {k: v for k, v in body.items() if k not in COMMON_CHECK_KEYS}
        try:
            validate_params(check_type, params)
        except ValidationError as exc:
            raise _pydantic_error(loaded, exc, keys, f"check '{name}' ({check_type})",
                                  CHECK_PARAMS[check_type]) from None
        timeout = body.get("timeout", monitoring.timeout)
        timeout = _number(loaded, timeout, [*keys, "timeout"], positive=True, maximum=MAX_TIMEOUT_S)
        warn = body.get("warn_after")
        error = body.get("error_after")
        warn = None if warn is None else _number(loaded, warn, [*keys, "warn_after"], positive=False)
        error = None if error is None else _number(loaded, error, [*keys, "error_after"], positive=False)
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise loaded.error(f"check '{name}': description must be text", [*keys, "description"])
        spec = CheckSpec(name=name, type=check_type, threshold=slas[name], params=params, timeout=timeout,
                         warn_after=warn, error_after=error, description=description)
        if warn is not None and warn >= spec.violation_above:
            bound = "error_after" if error is not None else f"the threshold slas.{name}"
            raise loaded.error(f"check '{name}': warn_after ({warn:g}) must be below {bound} "
                               f"({spec.violation_above:g})", [*keys, "warn_after"])
        checks[name] = spec
    return checks


def _alerts(loaded: LoadedYaml, raw: Any, slas: Mapping[str, float]) -> list[AlertRule]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise loaded.error("'alerts:' must be a list of rules", ["alerts"])
    rules: list[AlertRule] = []
    for i, item in enumerate(raw):
        keys: list[Any] = ["alerts", i]
        if not isinstance(item, Mapping):
            raise loaded.error(f"alerts[{i}] must be a mapping with a 'condition'", keys)
        try:
            rule = AlertRule.model_validate(dict(item))
        except ValidationError as exc:
            raise _pydantic_error(loaded, exc, keys, f"alerts[{i}]", AlertRule) from None
        try:
            condition = parse_condition(rule.condition)
        except ConditionError as exc:
            raise loaded.error(f"alerts[{i}].condition: {exc}", [*keys, "condition"]) from None
        unknown = sorted(n for n in condition.names if n not in slas)
        if unknown:
            raise loaded.error(f"alerts[{i}].condition names unknown SLA {', '.join(map(repr, unknown))} "
                               f"(known: {', '.join(slas)})", [*keys, "condition"])
        if rule.action == "webhook" and not rule.url:
            raise loaded.error(f"alerts[{i}]: action webhook needs a 'url'", keys)
        for field_name in ("message", "resolved_message"):
            try:
                check_template(getattr(rule, field_name), key=f"alerts.{i}.{field_name}")
            except ConfigError as exc:
                raise loaded.error(str(exc), [*keys, field_name]) from None
        rules.append(rule)
    return rules
