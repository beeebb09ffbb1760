"""What routing saves: recorded model calls and call logs priced, grouped and compared with all-Sonnet."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fibreflow.errors import ConfigError
from fibreflow.models.pricing import USAGE_FIELDS, Pricing, usage_tokens

if TYPE_CHECKING:
    from fibreflow.models.routing import ModelRouter
    from fibreflow.store import Store

_TEXT_KEYS = ("task", "prompt", "command", "task_text", "text")
MAX_DAYS = 36_500
"""The longest window in days (a century); a longer one runs off the calendar."""
MAX_LINE_CHARS = 1 << 20
"""A log line longer than this (1 MiB) is malformed; it is skipped without being held in memory."""


@dataclass
class _Call:
    at: dt.datetime
    agent: str | None
    model: str
    usage: dict[str, Any]  # the four token counts, and a transcript's ``cache_creation`` split
    text: str | None
    cost: float | None = None  # recorded at call time (DuckDB); else priced now
    project: str | None = None  # a Claude Code transcript's project


@dataclass
class CostAnalysis:
    """Spend in a window, and what it would have been routed and all on Sonnet."""

    days: float
    since: dt.datetime
    until: dt.datetime
    calls: int = 0
    current_cost: float = 0.0
    routed_cost: float = 0.0
    all_sonnet_cost: float = 0.0
    unclassified: int = 0
    by_tier: dict[str, dict[str, float]] = field(default_factory=dict)
    by_agent: dict[str, dict[str, float]] = field(default_factory=dict)
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)
    by_day: dict[str, dict[str, float]] = field(default_factory=dict)
    by_project: dict[str, dict[str, float]] = field(default_factory=dict)
    transcripts: dict[str, int] = field(default_factory=dict)
    malformed_lines: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``fibreflow cost analyze --json`` object (dollars rounded to 1/10000 cent)."""
        month = 30.0 / self.days if self.days else 0.0
        return {
            "days": self.days, "since": self.since.isoformat(), "until": self.until.isoformat(),
            "calls": self.calls, "current_cost": _r(self.current_cost), "routed_cost": _r(self.routed_cost),
            "all_sonnet_cost": _r(self.all_sonnet_cost),
            "savings": _r(self.current_cost - self.routed_cost),
            "savings_vs_sonnet": _r(self.all_sonnet_cost - self.routed_cost),
            "monthly_projection": {"current_cost": _r(self.current_cost * month),
                                   "routed_cost": _r(self.routed_cost * month),
                                   "all_sonnet_cost": _r(self.all_sonnet_cost * month)},
            "by_tier": _round_nested(self.by_tier), "by_agent": _round_nested(self.by_agent),
            "by_model": _round_nested(self.by_model), "by_day": _round_nested(self.by_day),
            "by_project": _round_nested(self.by_project), "transcripts": dict(self.transcripts),
            "unclassified": self.unclassified, "malformed_lines": self.malformed_lines,
            "malformed_count": len(self.malformed_lines), "sources": self.sources,
        }


def _r(x: float) -> float:
    return round(x, 6)


def _round_nested(d: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {f: (_r(v) if isinstance(v, float) else v) for f, v in row.items()} for k, row in sorted(d.items())}


def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (OverflowError, OSError, ValueError):  # inf, nan, 1e20: not a time on the calendar
            raise ValueError(f"timestamp {value!r} is not a time (epoch seconds out of range)") from None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"timestamp {value[:60]!r} is not ISO 8601 ({exc})") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    raise ValueError(f"timestamp must be ISO 8601 text or epoch seconds, got {value!r}")


def read_call_log(path: Path, pricing: Pricing, malformed: list[dict[str, Any]]) -> Iterator[_Call]:
    """Calls from a JSON-lines log; bad lines are appended to ``malformed`` with their number."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read the log: {exc.strerror}", path=str(path)) from None
    with handle:
        for number, line in enumerate(_bounded_lines(handle), start=1):
            if line is not None and not line.strip():
                continue
            try:
                if line is None:
                    raise ValueError(f"line longer than {MAX_LINE_CHARS} characters")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
                except RecursionError:
                    raise ValueError("invalid JSON: nested too deeply") from None
                if not isinstance(obj, dict):
                    raise ValueError("a line must be one JSON object")
                model = _priced_model(obj, obj.get("model"), pricing, what="model")
                agent = obj.get("agent")
                if agent is not None and not isinstance(agent, str):
                    raise ValueError(f"agent must be text or null, got a JSON {type(agent).__name__}")
                usage = usage_tokens(obj.get("usage") if isinstance(obj.get("usage"), dict) else obj)
                text = next((obj[k] for k in _TEXT_KEYS if isinstance(obj.get(k), str) and obj[k]), None)
                at = _parse_time(obj["timestamp"])
            except ValueError as exc:  # also json's errors, e.g. an integer of more digits than Python reads
                malformed.append({"file": str(path), "line": number, "error": _short(str(exc))})
                continue
            yield _Call(at, agent, model, usage, text)


def _priced_model(obj: dict[str, Any], model: Any, pricing: Pricing, *, what: str) -> str:
    """The call's model, if it is one the pricing file knows and the call has a timestamp; a
    ValueError naming ``what`` (the model's field) otherwise."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"no {what}")
    if not pricing.knows(model):
        raise ValueError(f"unknown model '{model}' (not in {pricing.path})")
    if "timestamp" not in obj:
        raise ValueError("no timestamp")
    return model


def _bounded_lines(handle: TextIO) -> Iterator[str | None]:
    """The lines of ``handle``; ``None`` for a line longer than MAX_LINE_CHARS, read past in chunks."""
    while True:
        line = handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            while line and not line.endswith("\n"):
                line = handle.readline(MAX_LINE_CHARS)
            yield None
        else:
            yield line


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _store_calls(store: Store, since: dt.datetime, until: dt.datetime) -> Iterator[_Call]:
    # the schema allows NULL token counts and cost: no tokens count as 0, no cost is priced now
    tokens = ", ".join(f"coalesce({f}, 0) AS {f}" for f in USAGE_FIELDS)
    df = store.query_df(
        f"SELECT created_at, agent, model, {tokens}, cost_usd, task_text FROM llm_calls "
        "WHERE status = 'ok' AND created_at >= ? AND created_at <= ?", [since, until])
    for row in df.itertuples(index=False):
        usage = {f: int(getattr(row, f)) for f in USAGE_FIELDS}
        text = row.task_text if isinstance(row.task_text, str) else None
        agent = row.agent if isinstance(row.agent, str) else None
        cost = _float_or_none(row.cost_usd)
        yield _Call(row.created_at.to_pydatetime(), agent, row.model, usage, text, cost)


def _float_or_none(value: Any) -> float | None:
    """A recorded number, or None for SQL NULL (None, NaN or pandas' NA)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def analyze_costs(store: Store | None = None, logs: Iterable[str | Path] = (), *, days: float = 30,
                  now: dt.datetime | None = None, router: ModelRouter | None = None,
                  pricing: Pricing | None = None, claude_code: str | Path | None = None) -> CostAnalysis:
    """Current spend of the last ``days``, the spend had every call been routed, and all-Sonnet.

    Calls come from ``llm_calls`` (when ``store`` is given), JSON-lines ``logs`` and the Claude
    Code transcripts under ``claude_code`` (:mod:`fibreflow.costs.claude_code`; a transcript's
    calls route on the prompt that started their turn). A call is
    routed on its task text (``task``/``prompt``/``command``) or its agent's rule; a call with
    neither keeps its own model and counts as ``unclassified``.
    """
    from fibreflow.models.routing import ModelRouter

    if not 0 < days <= MAX_DAYS:  # also refuses nan
        raise ConfigError(f"days must be above 0 and at most {MAX_DAYS}, got {days!r}", key="days")
    router = router or ModelRouter()
    pricing = pricing or Pricing.load(router.settings.models.pricing_path)
    until = _parse_time(now) if now is not None else dt.datetime.now(dt.UTC)
    since = until - dt.timedelta(days=days)
    out = CostAnalysis(days=days, since=since, until=until)
    sources: list[Iterable[_Call]] = []
    if store is not None:
        sources.append(_store_calls(store, since, until))
        out.sources.append(str(store.path))
    for log_path in logs:
        sources.append(read_call_log(Path(log_path), pricing, out.malformed_lines))
        out.sources.append(str(log_path))
    if claude_code is not None:
        from fibreflow.costs.claude_code import TranscriptScan, read_claude_code

        scan = TranscriptScan(malformed=out.malformed_lines)
        sources.append(read_claude_code(claude_code, pricing, scan))
        out.sources.append(str(claude_code))
    sonnet = router.get_model_id("sonnet")
    for source in sources:
        for call in source:
            if not since <= call.at <= until:
                continue
            current = call.cost if call.cost is not None else pricing.price_usage(call.model, call.usage)
            if call.text or call.agent in router.agent_rules:
                tier = router.classify_request(call.text or "", call.agent).tier
                routed = pricing.price_usage(router.get_model_id(tier), call.usage)
            else:
                tier, routed = "unclassified", current
                out.unclassified += 1
            all_sonnet = pricing.price_usage(sonnet, call.usage)
            out.calls += 1
            out.current_cost += current
            out.routed_cost += routed
            out.all_sonnet_cost += all_sonnet
            day = call.at.astimezone(dt.UTC).date().isoformat()
            for table, key in ((out.by_tier, tier), (out.by_agent, call.agent or "(none)"),
                               (out.by_model, call.model), (out.by_day, day),
                               (out.by_project, call.project or "(none)")):
                row = table.setdefault(key, {"calls": 0, "current_cost": 0.0, "routed_cost": 0.0,
                                             "all_sonnet_cost": 0.0, "savings": 0.0})
                row["calls"] += 1
                row["current_cost"] += current
                row["routed_cost"] += routed
                row["all_sonnet_cost"] += all_sonnet
                row["savings"] += current - routed
    if claude_code is not None:
        out.transcripts = {"files": scan.files, "responses": scan.responses, "duplicates": scan.duplicates,
                           "synthetic": scan.synthetic}
    return out
