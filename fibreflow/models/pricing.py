"""Token usage -> dollars from ``data/pricing.yaml``.

Anthropic's ``usage`` reports four disjoint token counts: ``input_tokens`` (fresh input,
excluding every cached token), ``cache_creation_input_tokens`` (written to the cache),
``cache_read_input_tokens`` (read from it) and ``output_tokens``. Each is priced once at its
own rate; adding the cache counts to ``input_tokens`` a second time is the classic double count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.errors import ConfigError
from fibreflow.yamlio import load_yaml

if TYPE_CHECKING:
    pass

RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
MAX_TOKENS = 10**12
"""Most tokens of one kind in one call: far above any context window, far below a float's overflow."""
_DATE_SUFFIX = re.compile(r"-\d{8}$")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the source tree, where data/ ships


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


def _token_count(name: str, value: Any) -> int:
    """One token count: a whole number from 0 to MAX_TOKENS (None is 0); else ValueError naming it."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a non-negative number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0 <= value <= MAX_TOKENS:  # a 400-digit count would overflow the dollars
        shown = f"{value!r}" if abs(value) < 10**20 else "a number of more than 20 digits"
        raise ValueError(f"{name} must be a number from 0 to {MAX_TOKENS}, got {shown}")
    return int(value)


def usage_tokens(usage: Any) -> dict[str, int]:
    """The four token counts of an SDK ``Usage`` or a dict, missing ones as 0; a count that is not
    a number from 0 to ``MAX_TOKENS`` is a ValueError naming it."""
    return {name: _token_count(f"usage.{name}", _get(usage, name)) for name in USAGE_FIELDS}


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
        w5 = _token_count("usage.cache_creation.ephemeral_5m_input_tokens", _get(split, "ephemeral_5m_input_tokens"))
        w1 = _token_count("usage.cache_creation.ephemeral_1h_input_tokens", _get(split, "ephemeral_1h_input_tokens"))
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
