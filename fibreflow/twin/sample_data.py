"""A realistic, seeded history for the twin's tests and benchmark: ``fill_sample_history(store)``.

It writes what fibreflow itself records over ``days``: build runs with features, best-of-N
attempts in two iterations (the second one with learned patterns, so it succeeds more often),
sandbox sessions, priced model calls from build agents and from always-on operations agents,
SLA checks of the twelve example SLAs every few minutes (values that rise with the model-call
load, a few violation episodes, one still going on) and the knowledge base's patterns and
events. Every table's rows go through that table's owner (``TABLE_OWNERS``: the build's
records, the sandbox's sessions, the model client, the SLA monitor, the knowledge base), never a
generic insert, so each table keeps one writer; tables the store does not have are skipped and
columns a table does not have are dropped, so it follows the schema as it grows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fibreflow.build.records import insert_attempts, insert_features, insert_runs
from fibreflow.config import TIERS
from fibreflow.learning.knowledge import insert_pattern_events, insert_patterns
from fibreflow.models.client import insert_calls
from fibreflow.sandbox.records import insert_sessions
from fibreflow.sla.monitor import insert_checks
from fibreflow.store import Store

#: name -> (check type, threshold, typical value as a share of the threshold, load sensitivity)
SLAS: dict[str, tuple[str, float, float, float]] = {
    "neon_to_convex_max_delay": ("sync_lag", 300, 0.30, 0.35),
    "convex_query_max_latency": ("http_latency", 2, 0.30, 0.30),
    "vlm_image_max_age": ("file_age", 600, 0.40, 0.05),
    "vlm_processing_max_time": ("command", 30, 0.35, 0.25),
    "vlm_server_max_response": ("http_latency", 10, 0.25, 0.20),
    "qfield_sync_interval": ("heartbeat", 180, 0.55, 0.0),
    "qfield_webhook_max_response": ("http_latency", 10, 0.20, 0.10),
    "whatsapp_message_max_delay": ("sync_lag", 60, 0.35, 0.30),
    "whatsapp_image_upload_max_time": ("sync_lag", 30, 0.30, 0.20),
    "whatsapp_session_max_age": ("heartbeat", 86400, 0.30, 0.0),
    "foto_reviews_max_age": ("sql_freshness", 1800, 0.35, 0.05),
    "delivery_reports_fresh": ("sql_freshness", 300, 0.40, 0.10),
}
#: build agents and their share of attempts
BUILD_AGENTS = {"coder": 0.6, "tester": 0.25, "refactorer": 0.15}
_TOKENS = {"haiku": (1500, 300), "sonnet": (6000, 900), "opus": (7000, 1100)}  # mean input, output
GOALS = {"delivery report export": ["csv-export", "pdf-export", "email-digest", "export-api", "retention"],
         "photo review queue": ["review-queue", "image-thumbnails", "reviewer-roles", "audit-log"],
         "QField sync API": ["sync-endpoint", "conflict-merge", "auth-tokens", "webhook-retry", "sync-metrics"],
         "WhatsApp media pipeline": ["media-download", "image-upload", "session-refresh", "dedupe"]}
_SPEED = {"haiku": 160.0, "sonnet": 70.0, "opus": 40.0}                        # output tokens / s
_SUCCESS = {"haiku": 0.12, "sonnet": 0.25, "opus": 0.35}                        # per attempt, round 1
_PATTERNS = [
    ("ImportError", "app.db", "ModuleNotFoundError: No module named <mod>", "add the package to requirements"),
    ("AssertionError", "tests.test_api", "assert <n> == <n> in test_pagination", "check the page size default"),
    ("SyntaxError", "app.routes", "SyntaxError: invalid syntax at <path>:<n>", "run ruff before the tests"),
    ("TypeError", "app.models", "TypeError: unsupported operand type(s) for +: NoneType and int",
     "guard optional fields before arithmetic"),
    ("timeout", None, "timed out after <n>s", "make the slow test use a smaller fixture"),
    ("AttributeError", "app.auth", "AttributeError: User object has no attribute <name>", "use the model's field"),
    ("NameError", "app.utils", "NameError: name <name> is not defined", "import the helper"),
    ("ValueError", "app.parse", "ValueError: invalid literal for int() with base <n>", "validate input first"),
    ("lint", "app", "ruff: F401 imported but unused", "remove unused imports"),
    ("killed", None, "killed: memory limit <n> MiB", "stream the file instead of reading it whole"),
    ("AssertionError", "tests.test_export", "assert csv header mismatch in test_export", "keep column order"),
    ("ImportError", "app.cli", "ImportError: cannot import name <name> from app.core", "fix the circular import"),
]

#: table -> its owner's insert (``fibreflow.store.schema.TABLE_OWNERS``)
_INSERTS: dict[str, Callable[[Store, Iterable[Mapping[str, Any]]], int]] = {
    "runs": insert_runs, "features": insert_features, "attempts": insert_attempts,
    "sandbox_sessions": insert_sessions, "llm_calls": insert_calls, "sla_checks": insert_checks,
    "learned_patterns": insert_patterns, "pattern_events": insert_pattern_events,
}

# the same mistakes in other modules: rarer ones turn up later, so the knowledge base grows
_VARIANTS = [(e, m and f"{m}{suffix}", sig if not suffix else f"{sig} ({m}{suffix})", fix)
             for suffix in ("", "_v2", ".legacy") for e, m, sig, fix in _PATTERNS]


def _table_columns(store: Store) -> dict[str, set[str]]:
    df = store.query_df("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'")
    cols: dict[str, set[str]] = defaultdict(set)
    for table, column in df.itertuples(index=False):
        cols[table].add(column)
    return cols


def fill_sample_history(store: Store, *, days: float = 14, seed: int = 0, now: dt.datetime | None = None,
                        sla_interval_min: float = 5.0, runs_per_day: float = 2.0) -> dict[str, int]:
    """Insert ``days`` of seeded history ending at ``now``; returns rows written per table."""
    from fibreflow.config import load_settings
    from fibreflow.models.pricing import Pricing

    settings = load_settings()
    pricing = Pricing.load(settings.models.pricing_path)
    end = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    start = end - dt.timedelta(days=days)
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    gen = _Generator(rng, rows, pricing, settings.models.tiers, end)
    t = start + dt.timedelta(hours=rng.uniform(0.5, 3))
    while t < end - dt.timedelta(hours=2):
        gen.run(t)
        t += dt.timedelta(hours=rng.expovariate(runs_per_day / 24.0))
    gen.live_run(end)
    gen.operations(start, end)
    gen.slas(start, end, dt.timedelta(minutes=sla_interval_min))
    gen.patterns()
    columns = _table_columns(store)
    written: dict[str, int] = {}
    for table, table_rows in rows.items():
        if table not in columns or not table_rows:
            continue
        keep = columns[table]
        written[table] = _INSERTS[table](store, [{k: v for k, v in r.items() if k in keep} for r in table_rows])
    return written


class _Generator:
    def __init__(self, rng: random.Random, rows: dict[str, list[dict[str, Any]]], pricing: Any,
                 tier_models: dict[str, str], end: dt.datetime) -> None:
        self.rng, self.rows, self.pricing, self.models, self.end = rng, rows, pricing, tier_models, end
        self.calls_per_hour: Counter[dt.datetime] = Counter()
        self.failures: list[tuple[int, dict[str, Any]]] = []
        self.shown: list[tuple[int, dict[str, Any], bool]] = []

    def _id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]

    def call(self, at: dt.datetime, agent: str, tier: str, *, run_id: str | None = None,
             attempt_id: str | None = None, scale: float = 1.0) -> float:
        rng, model = self.rng, self.models[tier]
        mean_in, mean_out = _TOKENS[tier]
        usage = {"input_tokens": int(rng.lognormvariate(math.log(mean_in * scale), 0.5)),
                 "output_tokens": int(rng.lognormvariate(math.log(mean_out * scale), 0.6)),
                 "cache_creation_input_tokens": int(mean_in * 0.5) if rng.random() < 0.15 else 0,
                 "cache_read_input_tokens": int(rng.uniform(0, 3) * mean_in) if rng.random() < 0.6 else 0}
        failed = rng.random() < 0.03
        status = rng.choice(["rate_limited", "overloaded"]) if failed else "ok"
        cost = 0.0 if failed else self.pricing.price_usage(model, usage)
        if failed:
            usage = dict.fromkeys(usage, 0)
        self.calls_per_hour[at.replace(minute=0, second=0, microsecond=0)] += 1
        self.rows["llm_calls"].append({
            "call_id": self._id(), "run_id": run_id, "attempt_id": attempt_id, "agent": agent, "tier": tier,
            "model": model, "try_no": 1, **usage, "cost_usd": cost,
            "latency_s": round(0.4 + usage["output_tokens"] / _SPEED[tier] * rng.uniform(0.7, 1.3), 3),
            "status": status, "stop_reason": None if failed else "end_turn",
            "error": {"rate_limited": "429 rate_limit_error", "overloaded": "529 overloaded_error"}.get(status),
            "created_at": at})
        return cost

    def run(self, t0: dt.datetime) -> None:
        rng = self.rng
        run_id = f"run-{t0:%Y%m%d-%H%M}-{self._id()[:4]}"
        goal = rng.choice(list(GOALS))
        features = GOALS[goal][:rng.randint(3, len(GOALS[goal]))]
        n = rng.choice([4, 5, 6])
        self.call(t0, "planner", "opus", run_id=run_id, scale=1.5)
        clock = t0 + dt.timedelta(seconds=rng.uniform(20, 60))
        run_ok = True
        for fid in features:
            f_start, winner, solved = clock, None, None
            tier = rng.choices(TIERS, [0.35, 0.6, 0.05])[0]
            for iteration in (1, 2, 3):  # a round without a passing attempt escalates, with learnings
                results = [self.attempt(run_id, fid, iteration, tier,
                                        clock + dt.timedelta(seconds=rng.uniform(0, 20))) for _ in range(n)]
                clock = max(r["ended_at"] for r in results) + dt.timedelta(seconds=rng.uniform(5, 30))
                passed = [r for r in results if r["status"] == "passed"]
                if passed:
                    best = max(passed, key=lambda r: r["coverage"])
                    winner, solved = best["attempt_id"], best["tier"]
                    break
                tier = TIERS[min(len(TIERS) - 1, TIERS.index(tier) + 1)]
            run_ok &= winner is not None
            self.rows["features"].append({
                "run_id": run_id, "feature_id": fid, "description": f"{fid} of {run_id}", "dependencies": "[]",
                "test_command": "python -m pytest -q", "status": "passed" if winner else "failed",
                "solved_tier": solved, "winner_attempt_id": winner, "started_at": f_start, "ended_at": clock})
        self.rows["runs"].append({
            "run_id": run_id, "goal": goal,
            "source": "feature_list.json", "status": "passed" if run_ok else "failed", "backend": "local",
            "profile": "python-tests", "agent": "claude", "attempts_per_feature": n, "workers": n,
            "started_at": t0, "ended_at": clock})

    def live_run(self, end: dt.datetime) -> None:
        """A build still going on at ``end``: its attempts are running, their agents active."""
        t0 = end - dt.timedelta(minutes=6)
        run_id, goal = f"run-{t0:%Y%m%d-%H%M}-live", "QField sync API"
        self.call(t0, "planner", "opus", run_id=run_id, scale=1.5)
        for i, agent in enumerate(["coder", "coder", "tester"]):
            attempt_id, begin = self._id(), t0 + dt.timedelta(seconds=30 + i)
            for k in range(3):
                self.call(begin + dt.timedelta(minutes=1 + k), agent, "sonnet", run_id=run_id, attempt_id=attempt_id)
            self.rows["attempts"].append({"attempt_id": attempt_id, "run_id": run_id, "feature_id": "sync-endpoint",
                                          "iteration": 1, "agent": agent, "tier": "sonnet",
                                          "sandbox_id": f"sbx-{attempt_id}", "status": "running",
                                          "started_at": begin})
            self.rows["sandbox_sessions"].append({"session_id": f"sbx-{attempt_id}", "backend": "local",
                                                  "profile": "python-tests", "isolation": "bwrap", "run_id": run_id,
                                                  "feature_id": "sync-endpoint", "attempt_id": attempt_id,
                                                  "started_at": begin, "est_cost_usd": 0.0})
        self.rows["features"].append({"run_id": run_id, "feature_id": "sync-endpoint", "status": "running",
                                      "description": "sync-endpoint", "started_at": t0})
        self.rows["runs"].append({"run_id": run_id, "goal": goal, "source": "feature_list.json", "status": "running",
                                  "backend": "local", "profile": "python-tests", "agent": "claude",
                                  "attempts_per_feature": 3, "workers": 3, "started_at": t0})

    def attempt(self, run_id: str, fid: str, iteration: int, tier: str, t0: dt.datetime) -> dict[str, Any]:
        rng = self.rng
        agent = rng.choices(list(BUILD_AGENTS), list(BUILD_AGENTS.values()))[0]
        attempt_id = self._id()
        duration = rng.lognormvariate(math.log({"haiku": 90, "sonnet": 180, "opus": 260}[tier]), 0.45)
        end = t0 + dt.timedelta(seconds=duration)
        # each call is routed on its own: reads, listings and checks go to Haiku, the work to the attempt's tier
        cost = sum(self.call(t0 + dt.timedelta(seconds=duration * (i + 0.5) / k), agent,
                             "haiku" if rng.random() < 0.5 else tier, run_id=run_id, attempt_id=attempt_id)
                   for k in [rng.randint(4, 12)] for i in range(k))
        p = min(0.95, _SUCCESS[tier] + 0.2 * (iteration - 1))
        passed = rng.random() < p
        timed_out = not passed and rng.random() < 0.08
        tests_total = rng.randint(6, 20)
        failed_tests = 0 if passed else rng.randint(1, tests_total)
        status = "passed" if passed else ("error" if timed_out else "failed")
        row = {"attempt_id": attempt_id, "run_id": run_id, "feature_id": fid, "iteration": iteration,
               "agent": agent, "tier": tier, "sandbox_id": f"sbx-{attempt_id}", "status": status,
               "exit_code": 0 if passed else (124 if timed_out else 1), "tests_passed": tests_total - failed_tests,
               "tests_failed": failed_tests, "coverage": round(rng.uniform(0.82, 0.99) if passed else
                                                              rng.uniform(0.3, 0.9), 3),
               "duration_s": round(duration, 2), "cost_usd": cost,
               "killed_reason": "timeout" if timed_out else None, "error": None if passed else "tests failed",
               "started_at": t0, "ended_at": end}
        self.rows["attempts"].append(row)
        e2b = rng.random() < 0.3
        self.rows["sandbox_sessions"].append({
            "session_id": row["sandbox_id"], "backend": "e2b" if e2b else "local", "profile": "python-tests",
            "isolation": "firecracker" if e2b else "bwrap", "run_id": run_id, "feature_id": fid,
            "attempt_id": attempt_id, "started_at": t0 - dt.timedelta(seconds=2), "ended_at": end,
            "cpu_s": round(duration * rng.uniform(0.3, 0.8), 2),
            "est_cost_usd": round(duration * (2 * 0.000014 + 0.5 * 0.0000045), 6) if e2b else 0.0,
            "outcome": status, "killed_reason": row["killed_reason"]})
        if not passed:
            self.failures.append((self._pattern_index(), row))
        if iteration > 1:  # this attempt was shown the patterns of the failed round before it
            self.shown.append((self._pattern_index(), row, passed))
        return row

    def _pattern_index(self) -> int:
        return min(len(_VARIANTS) - 1, int(self.rng.paretovariate(0.9)) - 1)

    def operations(self, start: dt.datetime, end: dt.datetime) -> None:
        """Always-on agents: a Haiku health pinger every 10 minutes, a Sonnet image evaluator by day."""
        t = start
        while t < end:
            self.call(t, "vps-monitor", "haiku", scale=0.4)
            if 7 <= t.hour < 19 and self.rng.random() < 0.5:
                self.call(t + dt.timedelta(minutes=3), "vlm-evaluator", "sonnet", scale=0.8)
            t += dt.timedelta(minutes=10)

    def slas(self, start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> None:
        rng = self.rng
        mean_load = max(1.0, sum(self.calls_per_hour.values()) / max(1, len(self.calls_per_hour)))
        episodes = {"neon_to_convex_max_delay": [(start + (end - start) * 0.3, 70)],
                    "convex_query_max_latency": [(start + (end - start) * 0.55, 40)],
                    "whatsapp_message_max_delay": [(start + (end - start) * 0.7, 50), (end - dt.timedelta(minutes=40), 120)],  # ongoing
                    "foto_reviews_max_age": [(start + (end - start) * 0.45, 30)]}
        t, cycle = start + step, 0
        while t <= end:
            cycle += 1
            load = self.calls_per_hour.get(t.replace(minute=0, second=0, microsecond=0), 0) / mean_load
            diurnal = 1 + 0.2 * math.sin((t.hour - 8) / 24 * 2 * math.pi)
            for name, (ctype, threshold, base, sensitivity) in SLAS.items():
                value = threshold * base * diurnal * (1 + sensitivity * load) * rng.lognormvariate(0, 0.15)
                if any(s <= t < s + dt.timedelta(minutes=m) for s, m in episodes.get(name, [])):
                    value = threshold * rng.uniform(1.2, 1.8)
                warn = threshold * 0.8
                status, reason = ("violation", f"{value:.1f} > {threshold:g}") if value > threshold else \
                    ("warn", f"{value:.1f} > warn_after {warn:g}") if value > warn else ("ok", None)
                stored: float | None = value
                if name == "vlm_server_max_response" and cycle % 997 == 0:
                    status, stored, reason = "error", None, "connection refused"
                self.rows["sla_checks"].append({
                    "cycle_id": f"cycle-{cycle}", "name": name, "check_type": ctype, "value": stored,
                    "threshold": float(threshold), "warn_after": warn, "error_after": None, "status": status,
                    "reason": reason, "checked_at": t, "duration_s": round(rng.uniform(0.01, 0.3), 3)})
            t += step

    def patterns(self) -> None:
        by_pattern: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for idx, row in self.failures:
            by_pattern[idx].append(row)
        ids = {idx: f"pat-{idx:03d}" for idx in by_pattern}
        helped: Counter[int] = Counter()
        shown: Counter[int] = Counter()
        for idx, row, ok in self.shown:
            if idx not in ids:
                continue
            shown[idx] += 1
            helped[idx] += ok
            for event in ("shown", "helped" if ok else "repeated"):
                self.rows["pattern_events"].append({
                    "pattern_id": ids[idx], "attempt_id": row["attempt_id"], "feature_id": row["feature_id"],
                    "agent": row["agent"], "event": event, "event_at": row["ended_at"]})
        for idx, seen in by_pattern.items():
            error_type, module, signature, fix = _VARIANTS[idx]
            for row in seen:
                self.rows["pattern_events"].append({
                    "pattern_id": ids[idx], "attempt_id": row["attempt_id"], "feature_id": row["feature_id"],
                    "agent": row["agent"], "event": "seen", "event_at": row["ended_at"]})
            weight = max(0.05, 1.0 * 1.2 ** helped[idx] * 0.8 ** (shown[idx] - helped[idx]))
            self.rows["learned_patterns"].append({
                "pattern_id": ids[idx], "signature": signature, "error_type": error_type,
                "affected_module": module, "example": signature.replace("<n>", "3"), "suggested_fix": fix,
                "count": len(seen), "first_seen": seen[0]["ended_at"], "last_seen": seen[-1]["ended_at"],
                "features": json.dumps(sorted({r["feature_id"] for r in seen})),
                "agents": json.dumps(sorted({r["agent"] for r in seen})), "weight": round(weight, 4),
                "shown": shown[idx], "helped": helped[idx], "retired": weight < 0.1})
