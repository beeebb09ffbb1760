"""The data of the cost report (``notebooks/cost_report.ipynb``), gathered in one call.

``load_cost_report(days=..., db_path=..., logs=...)`` (the notebook's parameters) reads the
model calls of the window from ``llm_calls`` and, optionally, JSON-lines call logs, and the
sandbox sessions from ``sandbox_sessions``; it returns DataFrames by tier, agent, day and week,
the monthly projection, and the savings against running every call on Sonnet. The headline
figures (current, routed and all-Sonnet cost) are ``fibreflow.costs.analysis.analyze_costs``'s; this
module only slices the same calls. Figures are in ``fibreflow.costs.views``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fibreflow.config import TIERS, load_settings
from fibreflow.costs.analysis import MAX_DAYS, CostAnalysis, analyze_costs, read_call_log
from fibreflow.errors import StoreError
from fibreflow.models.pricing import USAGE_FIELDS, Pricing
from fibreflow.models.routing import ModelRouter
from fibreflow.reporting.tables import format_dollars, format_percent
from fibreflow.store import Store

MONTH_DAYS = 30
CALL_COLUMNS = ["at", "agent", "tier", "model", *USAGE_FIELDS, "cost_usd", "all_sonnet_cost_usd", "source"]
_GROUP_COLUMNS = {"calls": ("cost_usd", "size"), "tokens": ("tokens", "sum"), "cost_usd": ("cost_usd", "sum"),
                  "all_sonnet_cost_usd": ("all_sonnet_cost_usd", "sum")}


@dataclass(frozen=True)
class CostReport:
    """Everything the cost report shows; every dollar column is in US dollars."""

    days: float
    since: dt.datetime
    until: dt.datetime
    db_path: Path | None
    analysis: CostAnalysis
    calls: pd.DataFrame
    by_tier: pd.DataFrame
    by_agent: pd.DataFrame
    daily: pd.DataFrame
    weekly: pd.DataFrame
    projection: pd.DataFrame
    sandboxes: pd.DataFrame
    by_backend: pd.DataFrame
    savings: pd.DataFrame

    @property
    def model_cost(self) -> float:
        """Dollars spent on model calls in the window."""
        return float(self.calls["cost_usd"].sum())

    @property
    def sandbox_cost(self) -> float:
        """Estimated dollars of sandbox sessions in the window."""
        return float(self.sandboxes["est_cost_usd"].sum())

    def summary(self) -> str:
        """A Markdown paragraph with the window, the spend, the projection and the savings."""
        head = (f"Window: the {self.days:g} days up to {self.until:%Y-%m-%d %H:%M} UTC. "
                f"Sources: {', '.join(self.analysis.sources) or 'none'}.")
        if self.calls.empty and self.sandboxes.empty:
            return head + "\n\n**No model calls or sandbox sessions were recorded in this window.**"
        total = self.projection.set_index("kind")
        base = float(self.savings.set_index("scenario").loc["all on Sonnet (baseline)", "cost_usd"])
        saved = base - self.model_cost
        share = f" ({format_percent(saved / base, 0)} of the baseline)" if base else ""
        usd = format_dollars
        return "\n".join([
            head, "",
            f"**Spend: {usd(self.model_cost + self.sandbox_cost)}**: models {usd(self.model_cost)} "
            f"({_count(len(self.calls), 'call')}), sandboxes {usd(self.sandbox_cost)} "
            f"({_count(len(self.sandboxes), 'session')}).",
            f"- Projected per {MONTH_DAYS} days at the rate of the last {total.loc['total', 'span_days']:.3g} days: "
            f"{usd(total.loc['total', 'monthly_projection'])} "
            f"(models {usd(total.loc['model', 'monthly_projection'])}, "
            f"sandboxes {usd(total.loc['sandbox', 'monthly_projection'])}).",
            f"- All on Sonnet the same calls would have cost {usd(base)}: tiered routing saved {usd(saved)}{share}.",
        ])

    def _repr_markdown_(self) -> str:
        # a pair of unescaped dollar signs is inline math to Jupyter's Markdown, which eats the bold text
        return self.summary().replace("$", r"\$")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def tier_of_model(model: str, tiers: dict[str, str]) -> str:
    """The tier a model belongs to: by the configured tiers, else by its family name, else ``other``."""
    for tier, model_id in tiers.items():
        if model == model_id:
            return tier
    return next((tier for tier in TIERS if tier in model), "other")


def read_calls(store: Store | None, logs: Sequence[str | Path], *, since: dt.datetime, until: dt.datetime,
               pricing: Pricing, router: ModelRouter) -> pd.DataFrame:
    """One row per successful model call in the window, from the store and the logs, with its
    recorded cost and its cost had it run on the Sonnet tier's model."""
    tiers = router.settings.models.tiers
    frames = []
    if store is not None:
        df = store.query_df(
            "SELECT created_at AS at, agent, tier, model, input_tokens, output_tokens, cache_creation_input_tokens, "
            "cache_read_input_tokens, cost_usd FROM llm_calls WHERE status = 'ok' AND created_at >= ? "
            "AND created_at <= ? ORDER BY created_at", [since, until])
        frames.append(df.assign(source="store"))
    for log in logs:
        rows = [{"at": c.at, "agent": c.agent, "tier": None, "model": c.model, **c.usage,
                 "cost_usd": pricing.price_usage(c.model, c.usage)}
                for c in read_call_log(Path(log), pricing, []) if since <= c.at <= until]
        frames.append(pd.DataFrame(rows, columns=CALL_COLUMNS[:-2]).assign(source=str(log)))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c == "at" else "object")
                             for c in CALL_COLUMNS}).astype({"cost_usd": float, "all_sonnet_cost_usd": float})
    calls = pd.concat(frames, ignore_index=True)
    calls["at"] = pd.to_datetime(calls["at"], utc=True)
    for name in USAGE_FIELDS:  # the schema allows NULL token counts: none counted is 0
        calls[name] = calls[name].fillna(0).astype("int64")
    unpriced = calls["cost_usd"].isna()  # no recorded cost: priced now, as the analysis does
    calls["cost_usd"] = [pricing.price_usage(model, dict(zip(USAGE_FIELDS, usage, strict=True))) if missing
                         else float(cost) for model, cost, missing, usage
                         in zip(calls["model"], calls["cost_usd"], unpriced,
                                calls[list(USAGE_FIELDS)].itertuples(index=False), strict=True)]
    calls["cost_usd"] = calls["cost_usd"].astype(float)
    calls["agent"] = calls["agent"].where(calls["agent"].notna(), "(none)")
    known = calls["tier"].notna() & calls["tier"].isin(TIERS)
    calls["tier"] = calls["tier"].where(known, calls["model"].map(lambda m: tier_of_model(m, tiers)))
    sonnet = router.get_model_id("sonnet")
    calls["all_sonnet_cost_usd"] = [pricing.price_usage(sonnet, dict(zip(USAGE_FIELDS, usage, strict=True)))
                                    for usage in calls[list(USAGE_FIELDS)].itertuples(index=False)]
    return calls[CALL_COLUMNS].sort_values("at", ignore_index=True)


def _grouped(calls: pd.DataFrame, key: str) -> pd.DataFrame:
    df = calls.assign(tokens=calls[list(USAGE_FIELDS)].sum(axis=1))
    out = df.groupby(key).agg(**_GROUP_COLUMNS).reset_index() if not df.empty else \
        pd.DataFrame(columns=[key, *_GROUP_COLUMNS])
    out["savings_vs_sonnet_usd"] = out["all_sonnet_cost_usd"] - out["cost_usd"]
    total = out["cost_usd"].sum()
    out["share"] = out["cost_usd"] / total if total else 0.0
    return out.sort_values("cost_usd", ascending=False, ignore_index=True)


def _by_tier(calls: pd.DataFrame) -> pd.DataFrame:
    out = _grouped(calls, "tier")
    order = {t: i for i, t in enumerate((*TIERS, "other"))}
    return out.sort_values("tier", key=lambda s: s.map(order), ignore_index=True)


def read_sandboxes(store: Store | None, *, since: dt.datetime, until: dt.datetime) -> pd.DataFrame:
    """Sandbox sessions started in the window with their estimated cost (0 where none was recorded)."""
    columns = ["started_at", "backend", "profile", "run_id", "cpu_s", "est_cost_usd"]
    if store is None:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("cpu_s", "est_cost_usd") else "object")
                             for c in columns})
    df = store.query_df(f"SELECT {', '.join(columns)} FROM sandbox_sessions WHERE started_at >= ? AND started_at <= ? "
                        "ORDER BY started_at", [since, until])
    df["started_at"] = pd.to_datetime(df["started_at"], utc=True)
    return df.fillna({"cpu_s": 0.0, "est_cost_usd": 0.0})


def _by_backend(sandboxes: pd.DataFrame) -> pd.DataFrame:
    if sandboxes.empty:
        return pd.DataFrame({"backend": pd.Series(dtype="object"), "sessions": pd.Series(dtype="int64"),
                             "cpu_s": pd.Series(dtype="float64"), "est_cost_usd": pd.Series(dtype="float64")})
    return (sandboxes.groupby("backend").agg(sessions=("backend", "size"), cpu_s=("cpu_s", "sum"),
                                             est_cost_usd=("est_cost_usd", "sum"))
            .reset_index().sort_values("est_cost_usd", ascending=False, ignore_index=True))


def _timeline(calls: pd.DataFrame, sandboxes: pd.DataFrame, *, since: dt.datetime, until: dt.datetime,
              freq: str) -> pd.DataFrame:
    """Model and sandbox cost per day (``freq="D"``) or per ISO week starting Monday (``"W"``)."""
    def bucket(ts: pd.Series) -> pd.Series:
        day = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
        return day - pd.to_timedelta(day.dt.day_of_week, unit="D") if freq == "W" else day

    first, last = bucket(pd.Series([pd.Timestamp(since), pd.Timestamp(until)]))
    index = pd.date_range(first, last, freq="7D" if freq == "W" else "D", name="period")
    model = calls.groupby(bucket(calls["at"]))["cost_usd"].agg(["sum", "size"]) if not calls.empty else None
    boxes = sandboxes.groupby(bucket(sandboxes["started_at"]))["est_cost_usd"].sum() if not sandboxes.empty else None
    out = pd.DataFrame(index=index)
    out["model_cost_usd"] = model["sum"].reindex(index, fill_value=0.0) if model is not None else 0.0
    out["sandbox_cost_usd"] = boxes.reindex(index, fill_value=0.0) if boxes is not None else 0.0
    out["total_cost_usd"] = out["model_cost_usd"] + out["sandbox_cost_usd"]
    out["calls"] = model["size"].reindex(index, fill_value=0).astype("int64") if model is not None else 0
    return out.reset_index()


def observed_days(calls: pd.DataFrame, sandboxes: pd.DataFrame, *, days: float, until: dt.datetime) -> float:
    """Days the spend was observed: from the window's first call or session to ``until``, at least
    one day and at most the window (a store two days old is not averaged over thirty)."""
    firsts = [df[col].min() for df, col in ((calls, "at"), (sandboxes, "started_at")) if not df.empty]
    if not firsts:
        return float(days)
    seen = (pd.Timestamp(until) - min(firsts)).total_seconds() / 86400
    return float(min(days, max(1.0, seen)))


def _projection(model: float, sandbox: float, span: float) -> pd.DataFrame:
    rows = [("model", model), ("sandbox", sandbox), ("total", model + sandbox)]
    df = pd.DataFrame(rows, columns=["kind", "window_cost_usd"])
    df["span_days"] = span
    df["daily_average_usd"] = df["window_cost_usd"] / span
    df["monthly_projection"] = df["daily_average_usd"] * MONTH_DAYS
    return df


def _savings(analysis: CostAnalysis, span: float) -> pd.DataFrame:
    rows = [("all on Sonnet (baseline)", analysis.all_sonnet_cost), ("as run", analysis.current_cost),
            ("as the router would route", analysis.routed_cost)]
    df = pd.DataFrame(rows, columns=["scenario", "cost_usd"])
    df["savings_vs_sonnet_usd"] = analysis.all_sonnet_cost - df["cost_usd"]
    df["savings_share"] = df["savings_vs_sonnet_usd"] / analysis.all_sonnet_cost if analysis.all_sonnet_cost else 0.0
    df["monthly_projection"] = df["cost_usd"] / span * MONTH_DAYS
    return df


def load_cost_report(*, days: float = 30, db_path: str | Path | None = None,
                     logs: str | Path | Sequence[str | Path] | None = None,
                     now: dt.datetime | None = None) -> CostReport:
    """Read the report's data: the store at ``db_path`` (None: the configured one) and ``logs``
    (JSON-lines call logs, one path or several), over the ``days`` up to ``now``."""
    if not 0 < days <= MAX_DAYS:  # also refuses nan
        raise ValueError(f"days must be above 0 and at most {MAX_DAYS}, got {days:g}")
    log_paths = [logs] if isinstance(logs, str | Path) else list(logs or [])
    opened = Store(db_path)
    store: Store | None = opened
    if not opened.exists():
        if not log_paths:
            raise StoreError(f"{opened.path}: no fibreflow store here; run a build first or pass db_path or logs")
        store = None
    settings = load_settings()
    router = ModelRouter(settings)
    pricing = Pricing.load(settings.models.pricing_path)
    until = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    since = until - dt.timedelta(days=days)
    analysis = analyze_costs(store, log_paths, days=days, now=until, router=router, pricing=pricing)
    calls = read_calls(store, log_paths, since=since, until=until, pricing=pricing, router=router)
    sandboxes = read_sandboxes(store, since=since, until=until)
    model_cost = float(calls["cost_usd"].sum())
    sandbox_cost = float(sandboxes["est_cost_usd"].sum())
    span = observed_days(calls, sandboxes, days=days, until=until)
    return CostReport(
        days=days, since=since, until=until, db_path=store.path if store else None, analysis=analysis,
        calls=calls, by_tier=_by_tier(calls), by_agent=_grouped(calls, "agent"),
        daily=_timeline(calls, sandboxes, since=since, until=until, freq="D"),
        weekly=_timeline(calls, sandboxes, since=since, until=until, freq="W"),
        projection=_projection(model_cost, sandbox_cost, span), sandboxes=sandboxes,
        by_backend=_by_backend(sandboxes), savings=_savings(analysis, span))


__all__ = ["CostReport", "load_cost_report", "observed_days", "read_calls", "read_sandboxes", "tier_of_model"]
