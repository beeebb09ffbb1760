"""What the store's history says about the workload: the simulator's calibration.

``Calibration.from_store`` reads one window of recorded history (model calls, attempts,
sandbox sessions, SLA checks) and keeps rates per day, per agent and per tier, the peaks that
limits are checked against (sandboxes at once, requests and tokens per minute), each tier's
attempt success rate, and per SLA how its measured value moves with the model-call load of
the hour (a least-squares slope, never negative). ``fibreflow.simulation.engine`` projects from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fibreflow.config import TIERS, Settings, SimulationSettings, load_settings
from fibreflow.errors import SimulationError
from fibreflow.store import StoreReader, store_tables
from fibreflow.yamlio import expand_env

if TYPE_CHECKING:
    import psycopg

USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
DAYS_PER_MONTH = 30.0
MIN_RELIABLE_DAYS = 7.0
"""Under this much history a projection is shown as a range with a warning, not one number."""


@dataclass(frozen=True)
class AgentProfile:
    """One agent type's recorded load over the window, and how many of it ran at once."""

    agent: str
    calls: int
    model_cost: float
    sandbox_cost: float
    attempts: int
    instances: int
    tier_calls: dict[str, int]
    uses_sandboxes: bool


@dataclass(frozen=True)
class TierProfile:
    """One model tier over the window: usage, cost, its busiest minute and its attempts' success."""

    tier: str
    calls: int
    usage: dict[str, int]
    cost: float
    peak_rpm: float
    peak_input_tpm: float
    peak_output_tpm: float
    attempts: int
    passed: int

    @property
    def failure_rate(self) -> float | None:
        """Share of attempts that did not pass (Laplace-smoothed); None without attempts."""
        return None if not self.attempts else 1.0 - (self.passed + 1) / (self.attempts + 2)


@dataclass(frozen=True)
class SLAProfile:
    """One SLA's recorded checks with the model calls of their hour."""

    name: str
    threshold: float
    values: np.ndarray
    ok: np.ndarray
    load: np.ndarray
    slope: float

    def compliance(self, load_factor: float = 1.0) -> float:
        """Share of checks that would meet the SLA with ``load_factor`` times the recorded load."""
        if not len(self.ok):
            return float("nan")
        shifted = self.values + self.slope * (load_factor - 1.0) * self.load
        return float(np.mean(self.ok & ~(shifted > self.threshold)))


@dataclass(frozen=True)
class Calibration:
    """The recorded workload of ``span_days`` days ending at ``end``."""

    span_days: float
    end: dt.datetime
    agents: dict[str, AgentProfile]
    tiers: dict[str, TierProfile]
    slas: dict[str, SLAProfile]
    model_cost: float
    sandbox_cost: float
    peak_sandboxes: int
    peak_agents: int
    peak_rpm: float
    peak_input_tpm: float
    peak_output_tpm: float
    pg_max_connections: int
    pg_base_connections: int
    pg_source: str
    settings: SimulationSettings
    tier_models: dict[str, str]
    model_usage: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(a.calls for a in self.agents.values())

    @property
    def monthly_cost(self) -> float:
        """Recorded spend (models + sandboxes) scaled to a 30-day month."""
        return (self.model_cost + self.sandbox_cost) * self.per_month

    @property
    def per_month(self) -> float:
        return DAYS_PER_MONTH / self.span_days

    @property
    def short_history(self) -> bool:
        """Calibrated on less than ``MIN_RELIABLE_DAYS`` of history (one week: a weekly cycle)."""
        return self.span_days < MIN_RELIABLE_DAYS

    def warning(self) -> str | None:
        """What to tell a reader of a projection from a short history; None from a week or more."""
        if not self.short_history:
            return None
        return (f"calibrated on only {_span_text(self.span_days)} of history (under {MIN_RELIABLE_DAYS:g} days): "
                "projections are a rough range, not a forecast; record a week of history before trusting them")

    def value_range(self, value: float) -> tuple[float, float] | None:
        """A plausible range for a figure scaled from this history; None from a week or more.

        A rate measured over ``span_days`` is uncertain roughly in proportion to one over the square
        root of the time observed; the range is ``value / f`` to ``value * f`` with
        ``f = 1 + 0.3 * sqrt(7 / span_days)`` (x1.3 at a week, x1.8 at a day, x4.9 at an hour).
        """
        if not self.short_history:
            return None
        f = 1.0 + 0.3 * (MIN_RELIABLE_DAYS / max(self.span_days, 1e-9)) ** 0.5
        return value / f, value * f

    def sla_impact(self, load_factor: float) -> tuple[float, list[dict[str, Any]]]:
        """Compliance change (percentage points) of the most affected SLA, and every SLA's figures."""
        rows: list[dict[str, Any]] = []
        for p in self.slas.values():
            now, then = p.compliance(), p.compliance(load_factor)
            rows.append({"name": p.name, "compliance": round(now, 4), "projected": round(then, 4),
                         "change_pp": round((then - now) * 100, 2), "slope_per_call": p.slope})
        rows.sort(key=lambda r: r["change_pp"])
        return (rows[0]["change_pp"] if rows else 0.0), rows

    def summary(self) -> dict[str, Any]:
        """The calibration as JSON-safe figures."""
        cost_range = self.value_range(self.monthly_cost)
        return {"span_days": round(self.span_days, 3), "end": self.end.isoformat(), "calls": self.calls,
                "monthly_cost": round(self.monthly_cost, 4), "warning": self.warning(),
                "monthly_cost_range": [round(x, 4) for x in cost_range] if cost_range else None, "model_cost": round(self.model_cost, 6),
                "sandbox_cost": round(self.sandbox_cost, 6), "peak_sandboxes": self.peak_sandboxes,
                "peak_agents": self.peak_agents, "peak_rpm": self.peak_rpm,
                "postgres": {"max_connections": self.pg_max_connections, "base": self.pg_base_connections,
                             "source": self.pg_source},
                "agents": {a.agent: {"calls": a.calls, "instances": a.instances, "attempts": a.attempts,
                                     "monthly_cost": round((a.model_cost + a.sandbox_cost) * self.per_month, 4)}
                           for a in self.agents.values()},
                "tiers": {t.tier: {"calls": t.calls, "attempts": t.attempts, "failure_rate": t.failure_rate,
                                   "peak_rpm": t.peak_rpm} for t in self.tiers.values()}}

    @classmethod
    def from_store(cls, store: StoreReader, *, days: float | None = None, now: dt.datetime | None = None,
                   settings: Settings | None = None, probe_postgres: bool = True) -> Calibration:
        """Calibrate on the ``days`` (default ``simulation.calibration_days``) before ``now``."""
        settings = settings or load_settings()
        sim = settings.simulation
        end = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        start = end - dt.timedelta(days=days or sim.calibration_days)
        w = [start, end]
        with store.connect() as con:
            tables = set(store_tables(con))

            def df(sql: str, params: list[Any], needs: tuple[str, ...]) -> Any:
                if not set(needs) <= tables:
                    import pandas as pd
                    return pd.DataFrame()
                return con.execute(sql, params).df()

            calls = df("SELECT coalesce(agent, '(none)') AS agent, tier, model, count(*) AS calls, "
                       + ", ".join(f"coalesce(sum({u}), 0) AS {u}" for u in USAGE) +
                       ", coalesce(sum(cost_usd), 0) AS cost, min(created_at) AS first FROM llm_calls "
                       "WHERE created_at > ? AND created_at <= ? GROUP BY ALL", w, ("llm_calls",))
            minutes = df("SELECT tier, max(n) AS rpm, max(i) AS itpm, max(o) AS otpm FROM ("
                         " SELECT tier, date_trunc('minute', created_at), count(*) AS n,"
                         " sum(input_tokens + cache_creation_input_tokens) AS i, sum(output_tokens) AS o"
                         " FROM llm_calls WHERE created_at > ? AND created_at <= ? GROUP BY ALL"
                         ") GROUP BY ROLLUP (tier)", w, ("llm_calls",))
            attempts = df("SELECT coalesce(agent, '(none)') AS agent, tier, count(*) AS n, "
                          "count(*) FILTER (WHERE status = 'passed') AS passed, min(started_at) AS first "
                          "FROM attempts WHERE started_at > ? AND started_at <= ? GROUP BY ALL", w, ("attempts",))
            peak_params = [start, end, end, start, end]
            instances = df(_PEAK_SQL.format(key="coalesce(agent, '(none)')", table="attempts"), peak_params,
                           ("attempts",))
            sandboxes = df(_PEAK_SQL.format(key="'all'", table="sandbox_sessions"), peak_params,
                           ("sandbox_sessions",))
            sandbox_cost = df("SELECT coalesce(a.agent, '(none)') AS agent, sum(s.est_cost_usd) AS cost, "
                              "min(s.started_at) AS first FROM sandbox_sessions s "
                              "LEFT JOIN attempts a USING (attempt_id) "
                              "WHERE s.started_at > ? AND s.started_at <= ? GROUP BY 1", w,
                              ("sandbox_sessions", "attempts"))
            sla = df("WITH h AS (SELECT date_trunc('hour', created_at) AS hour, count(*) AS n FROM llm_calls"
                     " WHERE created_at > ? AND created_at <= ? GROUP BY 1)"
                     " SELECT c.name, c.value, c.threshold, c.status IN ('ok', 'warn') AS ok,"
                     " coalesce(h.n, 0) AS load, c.checked_at FROM sla_checks c"
                     " LEFT JOIN h ON h.hour = date_trunc('hour', c.checked_at)"
                     " WHERE c.checked_at > ? AND c.checked_at <= ? ORDER BY c.name, c.checked_at",
                     w * 2, ("sla_checks", "llm_calls"))
        if calls.empty and attempts.empty:
            raise SimulationError(f"no model calls or attempts recorded in {store.path} between "
                                  f"{start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC: run a build "
                                  "(or `fibreflow demo`) first, or widen --days")
        firsts = [f for frame in (calls, attempts, sandbox_cost) if not frame.empty for f in frame["first"].dropna()]
        first = min(firsts) if firsts else start
        span_days = min(days or sim.calibration_days, max(1 / 24, (end - first).total_seconds() / 86400))
        pg_max, pg_base, pg_source = _postgres(sim, probe=probe_postgres)
        tier_of = {model: tier for tier, model in settings.models.tiers.items()}
        if not calls.empty:
            calls["tier"] = [t if t in TIERS else tier_of.get(m, "sonnet") for t, m in zip(calls["tier"], calls["model"],
                                                                                          strict=True)]
        return cls(
            span_days=span_days, end=end,
            agents=_agents(calls, attempts, instances, sandbox_cost),
            tiers=_tiers(calls, attempts, minutes),
            slas=_slas(sla),
            model_cost=float(calls["cost"].sum()) if not calls.empty else 0.0,
            sandbox_cost=float(sandbox_cost["cost"].fillna(0).sum()) if not sandbox_cost.empty else 0.0,
            peak_sandboxes=int(sandboxes["peak"].max()) if not sandboxes.empty else 0,
            peak_agents=int(instances["peak"].sum()) if not instances.empty else 0,
            **_overall_peaks(minutes), pg_max_connections=pg_max, pg_base_connections=pg_base,
            pg_source=pg_source, settings=sim, tier_models=dict(settings.models.tiers),
            model_usage={m: {u: int(g[u].sum()) for u in USAGE} for m, g in calls.groupby("model")}
            if not calls.empty else {})


# Peak overlap of [started_at, ended_at) intervals per key: +1 at each start, -1 at each end,
# ends sorted before starts at the same instant; an open interval ends at the window's end.
_PEAK_SQL = """
    WITH ev AS (
        SELECT {key} AS k, started_at AS t, 1 AS d FROM {table} WHERE started_at > ? AND started_at <= ?
        UNION ALL
        SELECT {key}, coalesce(ended_at, ?::TIMESTAMPTZ), -1 FROM {table} WHERE started_at > ? AND started_at <= ?
    )
    SELECT k AS agent, max(c) AS peak FROM (
        SELECT k, sum(d) OVER (PARTITION BY k ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS c FROM ev
    ) GROUP BY k
"""


def _agents(calls: Any, attempts: Any, instances: Any, sandbox_cost: Any) -> dict[str, AgentProfile]:
    names = set(calls["agent"]) if not calls.empty else set()
    names |= set(attempts["agent"]) if not attempts.empty else set()
    out = {}
    for name in sorted(names):
        c = calls[calls["agent"] == name] if not calls.empty else calls
        a = attempts[attempts["agent"] == name] if not attempts.empty else attempts
        peak = instances.loc[instances["agent"] == name, "peak"] if not instances.empty else []
        s = sandbox_cost.loc[sandbox_cost["agent"] == name, "cost"] if not sandbox_cost.empty else []
        out[name] = AgentProfile(
            agent=name, calls=int(c["calls"].sum()) if len(c) else 0,
            model_cost=float(c["cost"].sum()) if len(c) else 0.0,
            sandbox_cost=float(np.nansum(s)) if len(s) else 0.0,
            attempts=int(a["n"].sum()) if len(a) else 0,
            instances=max(1, int(max(peak)) if len(peak) else 1),
            tier_calls={t: int(g["calls"].sum()) for t, g in c.groupby("tier")} if len(c) else {},
            uses_sandboxes=bool(len(a)))
    return out


def _tiers(calls: Any, attempts: Any, minutes: Any) -> dict[str, TierProfile]:
    out = {}
    for tier in TIERS:
        c = calls[calls["tier"] == tier] if not calls.empty else calls
        a = attempts[attempts["tier"] == tier] if not attempts.empty else attempts
        m = minutes[minutes["tier"] == tier] if not minutes.empty else minutes
        out[tier] = TierProfile(
            tier=tier, calls=int(c["calls"].sum()) if len(c) else 0,
            usage={u: int(c[u].sum()) if len(c) else 0 for u in USAGE},
            cost=float(c["cost"].sum()) if len(c) else 0.0,
            peak_rpm=float(m["rpm"].max()) if len(m) else 0.0,
            peak_input_tpm=float(m["itpm"].max()) if len(m) else 0.0,
            peak_output_tpm=float(m["otpm"].max()) if len(m) else 0.0,
            attempts=int(a["n"].sum()) if len(a) else 0, passed=int(a["passed"].sum()) if len(a) else 0)
    return out


def _overall_peaks(minutes: Any) -> dict[str, float]:
    if minutes.empty:
        return {"peak_rpm": 0.0, "peak_input_tpm": 0.0, "peak_output_tpm": 0.0}
    # ROLLUP's total row has tier NULL; a NULL tier group also exists when calls had no tier
    total = minutes[minutes["tier"].isna()]
    return {"peak_rpm": float(total["rpm"].max()), "peak_input_tpm": float(total["itpm"].max()),
            "peak_output_tpm": float(total["otpm"].max())}


def _slas(sla: Any) -> dict[str, SLAProfile]:
    out: dict[str, SLAProfile] = {}
    if sla.empty:
        return out
    for name, g in sla.groupby("name", sort=True):
        values = g["value"].to_numpy(dtype=float)
        load = g["load"].to_numpy(dtype=float)
        finite = np.isfinite(values)
        slope = 0.0
        if finite.sum() > 2 and np.var(load[finite]) > 0:
            slope = max(0.0, float(np.polyfit(load[finite], values[finite], 1)[0]))
        out[str(name)] = SLAProfile(name=str(name), threshold=float(g["threshold"].iloc[-1]),
                                    values=np.nan_to_num(values, nan=0.0), ok=g["ok"].to_numpy(dtype=bool),
                                    load=load, slope=slope)
    return out


def _postgres(sim: SimulationSettings, *, probe: bool) -> tuple[int, int, str]:
    """max_connections and connections in use: asked of the server when configured and reachable."""
    if probe and sim.postgres_url:
        try:
            import psycopg

            with psycopg.connect(expand_env(sim.postgres_url), connect_timeout=2) as con:
                max_conn = _pg_int(con, "SHOW max_connections")
                reserved = _pg_int(con, "SHOW superuser_reserved_connections")
                in_use = _pg_int(con, "SELECT count(*) FROM pg_stat_activity "
                                      "WHERE backend_type = 'client backend'") - 1
            return max_conn - reserved, max(0, in_use), "server"
        except Exception:  # unreachable: fall back to the configured figures, and say so
            pass
    return sim.postgres_max_connections, sim.postgres_base_connections, "config"


def _pg_int(con: psycopg.Connection[Any], sql: str) -> int:
    """The integer in the first column of a one-row query; raises when no row came back."""
    row = con.execute(sql).fetchone()
    if row is None:
        raise LookupError(f"no row from {sql!r}")
    return int(row[0])


def _span_text(days: float) -> str:
    return f"{days * 24:.0f} hours" if days < 1 else f"{days:.1f} days"
