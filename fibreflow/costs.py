"""Token usage -> dollars from ``data/pricing.yaml``, and the analysis of what routing saves.

Anthropic's ``usage`` reports four disjoint token counts: ``input_tokens`` (fresh input,
excluding every cached token), ``cache_creation_input_tokens`` (written to the cache),
``cache_read_input_tokens`` (read from it) and ``output_tokens``. Each is priced once at its
own rate; adding the cache counts to ``input_tokens`` a second time is the classic double count.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.errors import ConfigError
from fibreflow.yamlio import load_yaml

if TYPE_CHECKING:
    from fibreflow.routing import ModelRouter
    from fibreflow.store import Store

RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_DATE_SUFFIX = re.compile(r"-\d{8}$")
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelRates:
    """Dollars per million tokens of one model."""

    model: str
    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_threshold: int | None = None
    long: ModelRates | None = None  # every token of a prompt over long_threshold bills here


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def usage_tokens(usage: Any) -> dict[str, int]:
    """The four token counts of an SDK ``Usage`` or a dict, missing ones as 0."""
    out: dict[str, int] = {}
    for name in USAGE_FIELDS:
        value = _get(usage, name)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"usage.{name} must be a non-negative number, got {value!r}")
        out[name] = int(value)
    return out


def resolve_path(path: str | Path) -> Path:
    """A relative data path is looked up in the working directory, then in the source tree."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    shipped = _PACKAGE_ROOT / p
    return shipped if shipped.exists() else p


class Pricing:
    """The price table; ``rates(model)`` accepts a model's ID, alias or dated snapshot ID."""

    def __init__(self, models: Mapping[str, ModelRates], *, batch_discount: float = 0.5,
                 aliases: Mapping[str, str] | None = None, path: Path | None = None) -> None:
        self.models = dict(models)
        self.batch_discount = batch_discount
        self.aliases = dict(aliases or {})
        self.path = path

    @classmethod
    def load(cls, path: str | Path | None = None) -> Pricing:
        """Read a pricing file (default: the configured ``models.pricing_path``)."""
        if path is None:
            from fibreflow.config import load_settings

            path = load_settings().models.pricing_path
        return _load_cached(resolve_path(path).resolve())

    def rates(self, model: str) -> ModelRates:
        """The rates of ``model``; an unknown model is a ConfigError naming it and the file."""
        name = self.aliases.get(model, model)
        if name not in self.models:
            base = _DATE_SUFFIX.sub("", model)
            name = self.aliases.get(base, base)
        if name not in self.models:
            where = str(self.path) if self.path else "the pricing table"
            raise ConfigError(f"unknown model '{model}': it has no price in {where} "
                              f"(known: {', '.join(sorted(self.models))})", path=where, key=model)
        return self.models[name]

    def knows(self, model: str) -> bool:
        """Whether ``model`` has a price."""
        try:
            self.rates(model)
        except ConfigError:
            return False
        return True

    def price_usage(self, model: str, usage: Any, *, batch: bool = False, cache_ttl: str = "5m") -> float:
        """Dollars for one call's ``usage``; each token kind priced once at its own rate.

        Cache writes use the per-TTL split in ``usage.cache_creation`` when the API gave one,
        else ``cache_ttl`` ("5m" or "1h") for all of ``cache_creation_input_tokens``.
        """
        if cache_ttl not in ("5m", "1h"):
            raise ValueError(f"cache_ttl must be '5m' or '1h', got {cache_ttl!r}")
        r = self.rates(model)
        t = usage_tokens(usage)
        prompt = t["input_tokens"] + t["cache_creation_input_tokens"] + t["cache_read_input_tokens"]
        if r.long is not None and r.long_threshold is not None and prompt > r.long_threshold:
            r = r.long
        split = _get(usage, "cache_creation")
        w5 = int(_get(split, "ephemeral_5m_input_tokens") or 0)
        w1 = int(_get(split, "ephemeral_1h_input_tokens") or 0)
        # tokens the split does not cover (older APIs omit it) go at the requested TTL's rate
        rest = max(0, t["cache_creation_input_tokens"] - w5 - w1)
        if cache_ttl == "1h":
            w1 += rest
        else:
            w5 += rest
        dollars = (t["input_tokens"] * r.input + t["output_tokens"] * r.output
                   + w5 * r.cache_write_5m + w1 * r.cache_write_1h
                   + t["cache_read_input_tokens"] * r.cache_read) / 1_000_000
        if batch:
            dollars *= 1.0 - self.batch_discount
        return dollars


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> Pricing:
    loaded = load_yaml(path)
    data = loaded.data
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not data["models"]:
        raise loaded.error("expected a mapping with a non-empty 'models:' section", ["models"])
    discount = data.get("batch_discount", 0.5)
    if isinstance(discount, bool) or not isinstance(discount, int | float) or not 0 <= discount < 1:
        raise loaded.error(f"batch_discount must be a fraction in [0, 1), got {discount!r}", ["batch_discount"])
    models: dict[str, ModelRates] = {}
    aliases: dict[str, str] = {}
    for name, entry in data["models"].items():
        keys = ["models", name]
        if not isinstance(entry, dict):
            raise loaded.error(f"model '{name}': expected a mapping of rates", keys)
        unknown = sorted(set(entry) - set(RATE_FIELDS) - {"aliases", "long_prompt"})
        if unknown:
            raise loaded.error(f"model '{name}': unknown key '{unknown[0]}' (known: "
                               f"{', '.join(RATE_FIELDS)}, aliases, long_prompt)", [*keys, unknown[0]])
        rates = _rates(loaded, str(name), entry, keys)
        long = entry.get("long_prompt")
        if long is not None:
            lkeys = [*keys, "long_prompt"]
            threshold = long.get("threshold_tokens") if isinstance(long, dict) else None
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
                raise loaded.error(f"model '{name}': long_prompt needs threshold_tokens (a positive integer)", lkeys)
            extra = sorted(set(long) - set(RATE_FIELDS) - {"threshold_tokens"})
            if extra:
                raise loaded.error(f"model '{name}': unknown long_prompt key '{extra[0]}'", [*lkeys, extra[0]])
            long_rates = _rates(loaded, str(name), long, lkeys)
            rates = replace(rates, long_threshold=threshold, long=long_rates)
        models[str(name)] = rates
        for alias in entry.get("aliases") or []:
            aliases[str(alias)] = str(name)
    return Pricing(models, batch_discount=float(discount), aliases=aliases, path=path)


def _rates(loaded: Any, name: str, entry: dict[str, Any], keys: list[Any]) -> ModelRates:
    values: list[float] = []
    for rate in RATE_FIELDS:
        value = entry.get(rate)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise loaded.error(f"model '{name}': {rate} must be a non-negative number of "
                               f"dollars per million tokens, got {value!r}", [*keys, rate])
        values.append(float(value))
    inp, out, w5, w1, read = values
    return ModelRates(name, inp, out, w5, w1, read)


def price_usage(model: str, usage: Any, *, batch: bool = False, cache_ttl: str = "5m",
                pricing: Pricing | None = None) -> float:
    """Dollars for one call's ``usage`` under the configured price table."""
    return (pricing or Pricing.load()).price_usage(model, usage, batch=batch, cache_ttl=cache_ttl)


# -- cost analysis ----------------------------------------------------------------------

_TEXT_KEYS = ("task", "prompt", "command", "task_text", "text")


@dataclass
class _Call:
    at: dt.datetime
    agent: str | None
    model: str
    usage: dict[str, int]
    text: str | None
    cost: float | None = None  # recorded at call time (DuckDB); else priced now


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
            "unclassified": self.unclassified, "malformed_lines": self.malformed_lines,
            "malformed_count": len(self.malformed_lines), "sources": self.sources,
        }


def _r(x: float) -> float:
    return round(x, 6)


def _round_nested(d: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {f: (_r(v) if isinstance(v, float) else v) for f, v in row.items()} for k, row in sorted(d.items())}


def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
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
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
                if not isinstance(obj, dict):
                    raise ValueError("a line must be one JSON object")
                model = obj.get("model")
                if not isinstance(model, str) or not model:
                    raise ValueError("no model")
                if not pricing.knows(model):
                    raise ValueError(f"unknown model '{model}' (not in {pricing.path})")
                if "timestamp" not in obj:
                    raise ValueError("no timestamp")
                usage = usage_tokens(obj.get("usage") if isinstance(obj.get("usage"), dict) else obj)
                text = next((obj[k] for k in _TEXT_KEYS if isinstance(obj.get(k), str) and obj[k]), None)
                yield _Call(_parse_time(obj["timestamp"]), obj.get("agent"), model, usage, text)
            except ValueError as exc:
                malformed.append({"file": str(path), "line": number, "error": str(exc)})


def _store_calls(store: Store, since: dt.datetime, until: dt.datetime) -> Iterator[_Call]:
    df = store.query_df(
        "SELECT created_at, agent, model, input_tokens, output_tokens, cache_creation_input_tokens, "
        "cache_read_input_tokens, cost_usd, task_text FROM llm_calls "
        "WHERE status = 'ok' AND created_at >= ? AND created_at <= ?", [since, until])
    for row in df.itertuples(index=False):
        usage = {f: int(getattr(row, f) or 0) for f in USAGE_FIELDS}
        text = row.task_text if isinstance(row.task_text, str) else None
        agent = row.agent if isinstance(row.agent, str) else None
        yield _Call(row.created_at.to_pydatetime(), agent, row.model, usage, text, float(row.cost_usd or 0.0))


def analyze_costs(store: Store | None = None, logs: Iterable[str | Path] = (), *, days: float = 30,
                  now: dt.datetime | None = None, router: ModelRouter | None = None,
                  pricing: Pricing | None = None) -> CostAnalysis:
    """Current spend of the last ``days``, the spend had every call been routed, and all-Sonnet.

    Calls come from ``llm_calls`` (when ``store`` is given) and JSON-lines ``logs``. A call is
    routed on its task text (``task``/``prompt``/``command``) or its agent's rule; a call with
    neither keeps its own model and counts as ``unclassified``.
    """
    from fibreflow.routing import ModelRouter

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
            for table, key in ((out.by_tier, tier), (out.by_agent, call.agent or "(none)")):
                row = table.setdefault(key, {"calls": 0, "current_cost": 0.0, "routed_cost": 0.0,
                                             "all_sonnet_cost": 0.0, "savings": 0.0})
                row["calls"] += 1
                row["current_cost"] += current
                row["routed_cost"] += routed
                row["all_sonnet_cost"] += all_sonnet
                row["savings"] += current - routed
    return out
