"""What-if simulation calibrated on the store's history (see ``fibreflow.simulation.calibration``).

Three questions, each answered as a ``ScenarioResult``:

- ``simulate_add_agents("coder", 10)``: ten more agents of a recorded type, each adding that
  type's recorded load per instance (an instance is one of the agents that ran at once at the
  recorded peak): cost, SLA impact and which limits it hits, at how many agents.
- ``optimize_model_routing({"70/25/5": (0.7, 0.25, 0.05), ...})``: the recorded workload's
  tokens priced on each tier, mixed by the shares (requests per tier); quality risk is the
  expected failure rate from each tier's recorded attempt success rate.
- ``plan_capacity(0.2)``: load growing 20 % a month; the month each limit is first exceeded.

Calibrated on less than a week of history (``Calibration.short_history``), every result carries
a ``warning`` and a ``cost_range`` (``Calibration.value_range``), and is shown as that range.

Limits: E2B sandbox concurrency per plan (peak sandboxes at once), each tier's requests and
input / output tokens per minute (the busiest recorded minute), PostgreSQL connections (the
server's max_connections when reachable) and the monthly budget; all in ``simulation:``.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fibreflow.config import TIERS
from fibreflow.errors import ConfigError
from fibreflow.simulation.calibration import DAYS_PER_MONTH, Calibration
from fibreflow.store import Store

__all__ = ["Calibration", "DEFAULT_MIXES", "Resource", "ScenarioResult", "calibrate", "optimize_model_routing",
           "parse_mix", "plan_capacity", "resources", "results_frame", "simulate_add_agents"]

#: The seed's target split and two alternatives (haiku, sonnet, opus shares of requests).
DEFAULT_MIXES: dict[str, tuple[float, float, float]] = {
    "70/25/5": (0.70, 0.25, 0.05), "80/18/2": (0.80, 0.18, 0.02), "60/35/5": (0.60, 0.35, 0.05)}
BUDGET = "monthly budget (USD)"


@dataclass
class ScenarioResult:
    """A projection. ``projected_cost`` is dollars per 30-day month (models + sandboxes);
    ``projected_sla_impact`` is the change, in percentage points, of the service level the
    scenario touches (negative = worse): compliance of the most affected data SLA for load
    scenarios, the attempt success rate for routing mixes."""

    scenario_name: str
    projected_cost: float
    projected_sla_impact: float
    bottlenecks: list[str]
    recommendations: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None
    cost_range: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the ``fibreflow simulate --json`` shape)."""
        return asdict(self)

    def cost_text(self) -> str:
        """The projected monthly cost as people read it: one amount, or a range from a short history."""
        from fibreflow.reporting.tables import format_dollars

        if self.cost_range:
            low, high = self.cost_range
            return f"{format_dollars(low)} to {format_dollars(high)}"
        return format_dollars(self.projected_cost)

    def _repr_html_(self) -> str:
        def items(title: str, values: list[str]) -> str:
            lis = "".join(f"<li>{html.escape(v)}</li>" for v in values) or "<li><i>none</i></li>"
            return f"<b>{title}</b><ul>{lis}</ul>"

        warn = (f"<p style='color:#8a4b00;background:#fff3cd;padding:4px'><b>Warning:</b> "
                f"{html.escape(self.warning)}</p>" if self.warning else "")
        return (f"<div><h4>{html.escape(self.scenario_name)}</h4>{warn}projected cost "
                f"<b>{html.escape(self.cost_text())}</b>"
                f" per month · impact <b>{self.projected_sla_impact:+.2f}</b> points"
                + items("Bottlenecks", self.bottlenecks) + items("Recommendations", self.recommendations) + "</div>")


def results_frame(results: list[ScenarioResult]) -> Any:
    """Scenario results as a DataFrame, one row each (for notebooks and reports)."""
    import pandas as pd

    return pd.DataFrame([{"scenario": r.scenario_name,
                          "projected_cost": r.cost_text() if r.cost_range else r.projected_cost,
                          "impact_pp": r.projected_sla_impact, "quality_risk": r.details.get("quality_risk"),
                          "bottlenecks": len(r.bottlenecks),
                          "first_recommendation": r.recommendations[0] if r.recommendations else ""}
                         for r in results])


def _hedged(cal: Calibration, result: ScenarioResult) -> ScenarioResult:
    """``result`` with the calibration's short-history warning and its cost as a range."""
    cost_range = cal.value_range(result.projected_cost)
    result.warning = cal.warning()
    result.cost_range = [round(x, 4) for x in cost_range] if cost_range else None
    return result


def calibrate(*, db_path: str | None = None, days: float | None = None) -> Calibration:
    """The calibration of the store at ``db_path`` (default: the configured one) over ``days``."""
    from fibreflow.store import open_store

    return Calibration.from_store(open_store(db_path), days=days)


@dataclass(frozen=True)
class Resource:
    """A limit: usage = fixed + scaling x load factor + per_agent[type] x added agents."""

    name: str
    limit: float
    fixed: float
    scaling: float
    per_agent: dict[str, float]
    advice: str

    def usage(self, *, load_factor: float = 1.0, agent: str | None = None, count: int = 0) -> float:
        return self.fixed + self.scaling * load_factor + self.per_agent.get(agent or "", 0.0) * count

    def headroom(self, agent: str) -> int | None:
        """How many more ``agent`` agents fit before the limit is exceeded (None: they add nothing)."""
        step = self.per_agent.get(agent, 0.0)
        return None if step <= 0 else max(-1, math.floor((self.limit - self.usage()) / step + 1e-9))


def resources(cal: Calibration) -> list[Resource]:
    """Every limit the simulation checks, with the calibrated usage it starts from."""
    sim, out = cal.settings, []
    for plan, limit in sim.e2b_concurrency_limits.items():
        out.append(Resource(f"E2B {plan} plan: concurrent sandboxes", limit, 0.0, cal.peak_sandboxes,
                            {a.agent: 1.0 for a in cal.agents.values() if a.uses_sandboxes},
                            f"move to a larger E2B plan or cap parallel attempts at {limit}"))
    for tier in TIERS:
        t, lim = cal.tiers[tier], sim.rate_limits[tier]
        for label, peak, limit, total in (("requests/min", t.peak_rpm, lim.rpm, t.calls),
                                          ("input tokens/min", t.peak_input_tpm, lim.input_tpm, t.calls),
                                          ("output tokens/min", t.peak_output_tpm, lim.output_tpm, t.calls)):
            per = {a.agent: peak * a.tier_calls.get(tier, 0) / total / a.instances
                   for a in cal.agents.values()} if total else {}
            out.append(Resource(f"{tier} {label}", limit, 0.0, peak, per,
                                f"ask Anthropic for a higher rate-limit tier, or route more {tier} work to "
                                "cheaper tiers / the Batch API"))
    out.append(Resource("PostgreSQL connections", cal.pg_max_connections, cal.pg_base_connections,
                        sim.postgres_connections_per_agent * cal.peak_agents,
                        dict.fromkeys(cal.agents, sim.postgres_connections_per_agent),
                        "put a connection pooler (PgBouncer) in front of PostgreSQL or raise max_connections"))
    out.append(Resource(BUDGET, sim.monthly_budget_usd, 0.0, cal.monthly_cost,
                        {a.agent: (a.model_cost + a.sandbox_cost) * cal.per_month / a.instances
                         for a in cal.agents.values()},
                        "route more work to Haiku, use prompt caching and the Batch API, or raise the budget"))
    return out


def _check(cal: Calibration, items: list[tuple[Resource, float]]) -> tuple[list[str], list[str], list[dict]]:
    bottlenecks, near, rows = [], [], []
    for res, used in items:
        share = used / res.limit if res.limit else math.inf
        state = "exceeded" if used > res.limit else "near" if share >= cal.settings.near_limit_share else "ok"
        rows.append({"name": res.name, "limit": res.limit, "projected": round(used, 4),
                     "share": round(share, 4), "status": state})
        if state == "exceeded":
            bottlenecks.append(f"{res.name}: {used:,.1f} > limit {res.limit:,.0f}")
        elif state == "near":
            near.append(f"{res.name} at {share:.0%} of its limit ({used:,.1f} of {res.limit:,.0f})")
    return bottlenecks, near, rows


def _calibration(calibration: Calibration | None, store: Store | None) -> Calibration:
    if calibration is not None:
        return calibration
    from fibreflow.store import open_store

    return Calibration.from_store(store or open_store())


def simulate_add_agents(agent_type: str | None, count: int, *, calibration: Calibration | None = None,
                        store: Store | None = None) -> ScenarioResult:
    """Project ``count`` more agents of a recorded ``agent_type`` (None: the type with the most
    recorded attempts): load, cost, SLA impact, and the limits it hits."""
    cal = _calibration(calibration, store)
    if agent_type is None and cal.agents:
        agent_type = max(cal.agents.values(), key=lambda a: (a.attempts, a.calls)).agent
    if agent_type not in cal.agents:
        raise ConfigError(f"unknown agent type '{agent_type}': the history has "
                          f"{', '.join(sorted(cal.agents)) or 'no agents'}", key="agent_type")
    if count < 0:
        raise ConfigError(f"count must be 0 or more, got {count}", key="count")
    agent = cal.agents[agent_type]
    added_calls = agent.calls / agent.instances * count
    load = 1.0 + (added_calls / cal.calls if cal.calls else 0.0)
    items = [(r, r.usage(agent=agent_type, count=count)) for r in resources(cal)]
    bottlenecks, near, rows = _check(cal, items)
    impact, slas = cal.sla_impact(load)
    headroom = {r.name: h for r in resources(cal) if (h := r.headroom(agent_type)) is not None}
    recs = [f"{r.advice} (" + (f"exceeded from {headroom[r.name] + 1} more {agent_type} agents on"
                               if r.name in headroom else "already exceeded by the recorded load") + ")"
            for r, used in items if used > r.limit]
    recs += [f"watch: {n}" for n in near]
    if not bottlenecks and headroom:
        first = min(headroom, key=lambda k: headroom[k])
        recs.append(f"{headroom[first]} more {agent_type} agents fit before the first limit ({first})")
    if impact < -1.0:
        recs.append(f"data SLAs lose up to {-impact:.1f} points of compliance ({slas[0]['name']}): add "
                    "capacity to the sources the agents load, or spread the agents' work over the day")
    cost = next(used for r, used in items if r.name == BUDGET)
    return _hedged(cal, ScenarioResult(
        f"add {count} {agent_type}", round(cost, 4), impact, bottlenecks, recs,
        {"agent_type": agent_type, "count": count, "load_factor": round(load, 4),
         "calls_per_month": round((cal.calls + added_calls) * cal.per_month, 1),
         "current_cost": round(cal.monthly_cost, 4), "limits": rows, "headroom": headroom, "slas": slas,
         "calibration_days": round(cal.span_days, 3)}))


def parse_mix(text: str, *, option: str = "--mix") -> tuple[str, tuple[float, float, float]]:
    """``"name=70/25/5"`` or ``"70/25/5"`` (percent or fractions, haiku/sonnet/opus) -> (name, shares)."""
    name, _, spec = text.rpartition("=")
    parts = [p for p in re.split(r"[/,:\s]+", spec.strip()) if p]
    try:
        shares = [float(p) for p in parts]
    except ValueError:
        shares = []
    if len(shares) != 3 or any(s < 0 for s in shares):
        raise ConfigError(f"{option} {text!r}: expected three shares haiku/sonnet/opus such as 70/25/5",
                          key=option)
    total = sum(shares)
    if not (abs(total - 100) <= 0.5 or abs(total - 1) <= 0.005):
        raise ConfigError(f"{option} {text!r}: shares add up to {total:g}, not 100 (or 1)", key=option)
    haiku, sonnet, opus = (s / total for s in shares)
    return (name.strip() or spec.strip()), (haiku, sonnet, opus)


def optimize_model_routing(scenarios: Mapping[str, tuple[float, float, float]] | None = None, *,
                           calibration: Calibration | None = None, store: Store | None = None,
                           pricing: Any = None) -> list[ScenarioResult]:
    """Cost and quality risk of routing mixes on the recorded workload, cheapest first; the
    recorded mix is included as ``recorded``."""
    from fibreflow.models.pricing import Pricing

    cal = _calibration(calibration, store)
    pricing = pricing or Pricing.load()
    priced = sum(pricing.price_usage(m, u) for m, u in cal.model_usage.items() if pricing.knows(m))
    factor = cal.model_cost / priced if priced else 1.0  # recorded vs list price (batch, discounts)
    pools = [cal.tiers[t] for t in TIERS]
    calls = sum(p.calls for p in pools) or 1
    recorded = tuple(p.calls / calls for p in pools)
    known = [t.failure_rate for t in cal.tiers.values() if t.failure_rate is not None]
    fallback = sum(known) / len(known) if known else 0.0
    fail = {t: fallback if (rate := cal.tiers[t].failure_rate) is None else rate for t in TIERS}
    mixes = {"recorded": recorded, **{n: tuple(float(s) for s in m) for n, m in (scenarios or DEFAULT_MIXES).items()}}
    base_risk = sum(s * fail[t] for s, t in zip(recorded, TIERS, strict=True))
    sandbox = cal.sandbox_cost * cal.per_month
    results = []
    for name, shares in mixes.items():
        if len(shares) != 3 or abs(sum(shares) - 1) > 0.005:
            raise ConfigError(f"routing scenario {name!r}: three shares (haiku, sonnet, opus) adding up to 1, "
                              f"got {shares}", key=name)
        model = _mix_cost(pools, shares, pricing, cal.tier_models) * factor * cal.per_month
        risk = sum(s * fail[t] for s, t in zip(shares, TIERS, strict=True))
        by_tier = []
        for s, t in zip(shares, TIERS, strict=True):
            lim = cal.settings.rate_limits[t]
            for label, peak, limit in (("requests/min", cal.peak_rpm, lim.rpm),
                                       ("input tokens/min", cal.peak_input_tpm, lim.input_tpm),
                                       ("output tokens/min", cal.peak_output_tpm, lim.output_tpm)):
                by_tier.append((Resource(f"{t} {label}", limit, 0.0, peak * s, {}, ""), peak * s))
        budget = Resource(BUDGET, cal.settings.monthly_budget_usd, 0, 0, {}, "")
        bottlenecks, near, rows = _check(cal, [*by_tier, (budget, model + sandbox)])
        recs = [f"watch: {n}" for n in near]
        if risk - base_risk > cal.settings.quality_risk_tolerance:
            recs.append(f"expected failure rate {risk:.1%} vs {base_risk:.1%} recorded: more retries and "
                        "escalations; keep harder features on Sonnet / Opus")
        missing = [t for s, t in zip(shares, TIERS, strict=True) if s > 0 and cal.tiers[t].failure_rate is None]
        if missing:
            recs.append(f"no recorded attempts on {', '.join(missing)}: its quality risk is assumed "
                        f"({fallback:.0%}), record some before trusting this mix")
        results.append(_hedged(cal, ScenarioResult(
            name, round(model + sandbox, 4), round((base_risk - risk) * 100, 2) + 0.0, bottlenecks, recs,
            {"shares": dict(zip(TIERS, [round(s, 4) for s in shares], strict=True)),
             "model_cost": round(model, 4), "sandbox_cost": round(sandbox, 4),
             "quality_risk": round(risk, 4), "recorded_quality_risk": round(base_risk, 4),
             "cost_per_success": round(model / max(1e-9, 1 - risk), 4), "limits": rows,
             "price_factor": round(factor, 4)})))
    results.sort(key=lambda r: (r.projected_cost, r.scenario_name))
    ok = [r for r in results if r.details["quality_risk"] - base_risk <= cal.settings.quality_risk_tolerance
          and not r.bottlenecks]
    if ok:
        ok[0].recommendations.insert(0, "recommended: the cheapest mix within the quality-risk tolerance "
                                        f"({cal.settings.quality_risk_tolerance:.0%}) that hits no limit")
    return results


def _mix_cost(pools: list[Any], shares: tuple[float, ...], pricing: Any, models: dict[str, str]) -> float:
    """Dollars of the recorded requests re-routed to ``shares``: surplus requests of a tier move to
    the nearest tiers short of their share and keep their own token profile (big Opus tasks stay big)."""
    total = sum(p.calls for p in pools)
    left = [float(p.calls) for p in pools]
    need = [s * total - p.calls for s, p in zip(shares, pools, strict=True)]  # > 0: short of requests
    moved = [[0.0] * len(pools) for _ in pools]
    for distance in range(1, len(pools)):
        for a in range(len(pools)):
            for b in (a - distance, a + distance):
                if 0 <= b < len(pools) and need[a] < 0 and need[b] > 0:
                    n = min(-need[a], need[b])
                    moved[a][b] += n
                    need[a] += n
                    need[b] -= n
                    left[a] -= n
    cost = 0.0
    for a, pool in enumerate(pools):
        if not pool.calls:
            continue
        for b, tier in enumerate(TIERS):
            n = left[a] if a == b else moved[a][b]
            if n > 0:
                cost += pricing.price_usage(models[tier], pool.usage) * n / pool.calls
    return cost


def plan_capacity(growth_rate_per_month: float, *, months: int = 12, calibration: Calibration | None = None,
                  store: Store | None = None) -> ScenarioResult:
    """Load growing by ``growth_rate_per_month`` (0.2 = 20 %): when each limit is first exceeded.

    ``projected_cost`` is the monthly cost in the last month of the horizon."""
    cal = _calibration(calibration, store)
    if growth_rate_per_month <= -1:
        raise ConfigError(f"growth must be above -1 (-100 %), got {growth_rate_per_month}", key="--growth")
    if months < 1:
        raise ConfigError(f"months must be at least 1, got {months}", key="--months")
    g = 1.0 + growth_rate_per_month
    limits = []
    for r in resources(cal):
        reached = next((m for m in range(months + 1) if r.usage(load_factor=g ** m) > r.limit), None)
        limits.append({"name": r.name, "limit": r.limit, "current": round(r.usage(), 4),
                       "month_reached": reached, "advice": r.advice})
    limits.sort(key=lambda x: (x["month_reached"] is None, x["month_reached"] or 0, x["name"]))
    timeline = [{"month": m, "load_factor": round(g ** m, 4), "cost": round(cal.monthly_cost * g ** m, 4),
                 "peak_sandboxes": round(cal.peak_sandboxes * g ** m, 2),
                 "sla_impact_pp": cal.sla_impact(g ** m)[0]} for m in range(months + 1)]
    hit = [x for x in limits if x["month_reached"] is not None]
    bottlenecks = [f"{x['name']}: exceeded in month {x['month_reached']} (limit {x['limit']:,.0f})" for x in hit]
    recs = [f"before month {x['month_reached']}: {x['advice']}" for x in hit[:3]]
    if not hit:
        recs.append(f"no limit is reached within {months} months at {growth_rate_per_month:+.0%} a month")
    impact = timeline[-1]["sla_impact_pp"]
    if impact < -1.0:
        recs.append(f"data SLA compliance falls by {-impact:.1f} points by month {months}")
    return _hedged(cal, ScenarioResult(
        f"growth {growth_rate_per_month:+.0%}/month for {months} months", timeline[-1]["cost"], impact,
        bottlenecks, recs, {"growth_rate_per_month": growth_rate_per_month, "months": months,
                            "limits": limits, "timeline": timeline, "current_cost": round(cal.monthly_cost, 4),
                            "days_per_month": DAYS_PER_MONTH}))
