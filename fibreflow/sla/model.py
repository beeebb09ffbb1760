"""Shared records of SLA monitoring: what a check returns and the alert rules' schema."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Status = Literal["ok", "warn", "violation", "error"]


@dataclass(frozen=True)
class CheckResult:
    """One measurement of one SLA. ``value`` is in the SLA's unit (seconds for freshness)."""

    name: str
    status: Status
    value: float | None
    threshold: float
    checked_at: dt.datetime
    duration_s: float
    check_type: str = ""
    reason: str | None = None
    warn_after: float | None = None
    error_after: float | None = None
    cycle_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_violation(self) -> bool:
        return self.status == "violation"

    def as_row(self) -> dict[str, Any]:
        """The ``sla_checks`` row for this result."""
        row = asdict(self)
        row.pop("details")
        return row

    def to_dict(self) -> dict[str, Any]:
        """The ``sla check --json`` shape."""
        return {"name": self.name, "status": self.status, "value": self.value,
                "threshold": self.threshold, "reason": self.reason}


# the ranges of the numeric settings: a day is the longest wait between cycles, a year the
# longest cooldown, an hour the longest check, a century the longest history
MAX_INTERVAL_S = 86_400.0
MAX_COOLDOWN_S = 365 * 86_400.0
MAX_TIMEOUT_S = 3_600.0
MAX_DAYS = 36_500


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AlertRule(_Strict):
    """One ``alerts:`` entry: when ``condition`` holds, notify through ``action``."""

    condition: str = Field(description="Safe expression over SLA values, e.g. 'neon_to_convex_max_delay > 300'.")
    action: Literal["slack", "webhook"] = Field("slack", description="Delivery channel.")
    channel: str | None = Field(None, description="Slack channel (bot-token delivery); default from settings.")
    url: str | None = Field(None, description="Webhook URL; use ${VAR} so the secret stays in the environment.")
    severity: Literal["info", "warning", "critical"] = Field("warning", description="Shown in the message.")
    message: str = Field("{name} violated: {value} (SLA: {threshold})",
                         description="Template; fields {name} {value} {threshold} {status} {severity} {reason}.")
    cooldown: float | None = Field(None, ge=0, le=MAX_COOLDOWN_S,
                                   description="Seconds between repeats (0 to a year); default monitoring.cooldown.")
    notify_resolved: bool = Field(True, description="Send a resolved message when the condition clears.")
    resolved_message: str = Field("{name} resolved: {value} (SLA: {threshold})",
                                  description="Template of the resolved message; same fields as message.")


class MaintenanceWindow(_Strict):
    """A recurring window with no notifications (checks are still recorded). Times are UTC."""

    start: str = Field(description="HH:MM, UTC.")
    end: str = Field(description="HH:MM, UTC; may be before start to cross midnight.")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        None, description="Weekdays the window applies on (day of its start); all days if omitted.")
    slas: list[str] | None = Field(None, description="SLAs it silences; all if omitted.")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hh_mm(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            # YAML 1.1 reads an unquoted 02:30 as the base-60 integer 150
            value = f"{value // 60:02d}:{value % 60:02d}"
        if not isinstance(value, str):
            raise ValueError(f"expected a UTC time as HH:MM, got {value!r}")
        hours, sep, minutes = value.partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2
                and int(hours) < 24 and int(minutes) < 60):
            raise ValueError(f"expected a UTC time as HH:MM (00:00-23:59), got {value!r}")
        return value


class MonitoringSettings(_Strict):
    """The ``monitoring:`` block."""

    check_interval: float = Field(60, ge=1, le=MAX_INTERVAL_S,
                                  description="Seconds between cycles of `sla watch` (1 to 86400).")
    retention_days: int = Field(30, ge=1, le=MAX_DAYS,
                                description="sla_checks rows older than this many days are deleted (1 to 36500).")
    cooldown: float = Field(300, ge=0, le=MAX_COOLDOWN_S,
                            description="Default seconds between repeated alerts of one SLA (0 to a year).")
    timeout: float = Field(10, gt=0, le=MAX_TIMEOUT_S, description="Default per-check timeout in seconds (up to 3600).")
    compliance_window_days: int = Field(30, ge=1, le=MAX_DAYS, description="Rolling window for compliance, in days.")
    compliance_target: float = Field(0.95, gt=0, lt=1, description="Share of OK checks an SLA must reach (0 to 1).")
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
