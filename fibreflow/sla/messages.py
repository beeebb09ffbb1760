"""Alert texts: rule templates with {name} {value} {threshold} {status} {severity} {reason},
and the Slack Block Kit layout (header with severity, section with value / threshold / status).

Templates are bounded: a format spec may ask for a width or precision of at most ``MAX_WIDTH``
and may not nest fields (``{value:{threshold}}``), a template is at most ``MAX_MESSAGE_CHARS``
long, and a rendered message longer than that (a long ``{reason}``) is cut with a marker.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import string
from typing import Any

from fibreflow.errors import ConfigError

TEMPLATE_FIELDS = ("name", "value", "threshold", "status", "severity", "reason")
MAX_WIDTH = 100
"""Largest width or precision a template's format spec may ask for (``{name:>20}``, ``{value:.3f}``)."""
MAX_MESSAGE_CHARS = 4000
"""Longest template, and longest message sent: a longer rendered text is cut and ends in TRUNCATED."""
TRUNCATED = " … [truncated]"
_NUMBER = re.compile(r"\d+")
_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


class Number:
    """A value that prints sensibly (``312``, ``1.5``, ``0.0421``, ``n/a``) and honours format specs."""

    def __init__(self, value: float | None) -> None:
        self.value = value

    def __str__(self) -> str:
        return format_value(self.value)

    def __format__(self, spec: str) -> str:
        if not spec or self.value is None:
            return format(str(self), spec if spec and not spec[-1:].isalpha() else "")
        return format(self.value, spec)


def format_value(value: float | None) -> str:
    """Seconds and other SLA values for people: whole numbers from 100 up, else 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{round(value):d}"
    return f"{value:.3g}"


def check_template(template: str, *, key: str) -> None:
    """Raise ConfigError (naming ``key``) if ``template`` uses unknown fields or bad syntax."""
    if len(template) > MAX_MESSAGE_CHARS:
        raise ConfigError(f"{key}: the message template is {len(template)} characters long; at most "
                          f"{MAX_MESSAGE_CHARS} are allowed", key=key)
    try:
        parsed = [(f, spec or "") for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{key}: bad message template {template!r}: {exc}", key=key) from None
    for name, spec in parsed:
        if "{" in spec or "}" in spec:
            raise ConfigError(f"{key}: the format spec of {{{name}}} may not contain fields ({{...}})", key=key)
        # width and precision are the only numbers of more than one digit a spec can hold
        if any(int(number) > MAX_WIDTH for number in _NUMBER.findall(spec)):
            raise ConfigError(f"{key}: the format spec {spec!r} of {{{name}}} asks for a width or precision "
                              f"above {MAX_WIDTH}", key=key)
    for name, _ in parsed:
        if name not in TEMPLATE_FIELDS:
            # also refuses {name.attr} / {name[0]}: templates never reach into objects
            raise ConfigError(f"{key}: unknown field {{{name}}} in message template; known fields: "
                              + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS), key=key)
    try:
        render(template, name="x", value=1.0, threshold=1.0, status="ok", severity="warning", reason=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: bad message template {template!r}: {exc}", key=key) from None


def render(template: str, *, name: str, value: float | None, threshold: float | None, status: str,
           severity: str, reason: str | None) -> str:
    """Fill a checked template; a text longer than MAX_MESSAGE_CHARS is cut and ends in TRUNCATED."""
    text = template.format(name=name, value=Number(value), threshold=Number(threshold), status=status,
                           severity=severity, reason=reason or "")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS - len(TRUNCATED)] + TRUNCATED
    return text


def slack_blocks(*, kind: str, text: str, name: str, severity: str, value: float | None,
                 threshold: float | None, status: str, reason: str | None,
                 checked_at: dt.datetime | None) -> list[dict[str, Any]]:
    """Block Kit layout of one notification."""
    if kind == "resolved":
        header = f":white_check_mark: Resolved: {name}"
    else:
        header = f"{_EMOJI.get(severity, '')} {severity.upper()}: {name}".strip()
    fields = [("Value", format_value(value)), ("Threshold", format_value(threshold)),
              ("Status", status), ("Severity", severity)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]},
         "fields": [{"type": "mrkdwn", "text": f"*{label}*\n{val}"} for label, val in fields]},
    ]
    context = [f"SLA `{name}`"]
    if checked_at is not None:
        context.append(f"checked {checked_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    if reason:
        context.append(reason[:300])
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return blocks


__all__ = ["MAX_MESSAGE_CHARS", "MAX_WIDTH", "TEMPLATE_FIELDS", "TRUNCATED", "Number", "check_template",
           "format_value", "render", "slack_blocks"]
