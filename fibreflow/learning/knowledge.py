"""``FailureKnowledgeBase``: failure patterns learned from executed runs, kept in DuckDB.

A pattern is one normalized failure signature with how often, where and by whom it was seen.
Patterns come only from failing runs (an exit status, a kill, test output, a JUnit report); an
analysis that only a model's reflection backs is refused, since self-generated explanations can
teach wrong rules. Usefulness is measured: a pattern shown to an attempt that then passed gains
weight, one shown to an attempt that failed the same way anyway loses weight, and a pattern whose
weight falls below ``retire_below`` is retired (kept, no longer shown).

This module is the only writer of ``learned_patterns`` and ``pattern_events``; a sample history
inserts its rows through ``insert_patterns`` and ``insert_pattern_events``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fibreflow.build.attempt import AgentAttempt, FailureAnalysis
from fibreflow.clock import utc_now
from fibreflow.learning.analysis import analyze_failure
from fibreflow.learning.credit import concerns
from fibreflow.learning.evidence import evidence_of
from fibreflow.store import Store

_TOKEN = re.compile(r"[a-z][a-z0-9]{2,}")
_STOP = frozenset("the and for with from that this into not are was has have error test tests".split())
_SECRET = re.compile(r"(sk-ant-[\w-]+|xox[abposr]-[\w-]+|gh[pousr]_\w{20,}|"
                     r"(?i:(?:api[_-]?key|token|secret|password)\s*[=:]\s*)\S+)")
_PATTERN_COLUMNS = ("pattern_id, signature, error_type, affected_module, example, suggested_fix, count, "
                    "first_seen, last_seen, features, agents, weight, shown, helped, retired")



def redact(text: str) -> str:
    """``text`` with anything that looks like a key, token or password replaced."""
    return _SECRET.sub("<redacted>", text)


def tokens(text: str) -> set[str]:
    """Lower-case word tokens (3+ characters, common words dropped) for text similarity."""
    return {t for t in _TOKEN.findall(text.lower().replace("_", " ").replace(".", " ")) if t not in _STOP}


@dataclass(frozen=True)
class LearningContext:
    """What an attempt is about to work on: its agent, the feature's text, the module in focus."""

    agent: str | None = None
    feature_text: str = ""
    module: str | None = None


@dataclass(frozen=True)
class Learning:
    """A pattern chosen for an attempt's "known pitfalls", with why it ranked where it did."""

    pattern_id: str
    error_type: str
    affected_module: str | None
    example: str
    suggested_fix: str
    count: int
    weight: float
    score: float
    signature: str = ""

    @property
    def subject(self) -> str | None:
        """What the failure was about (a missing module, an undefined name, a test), if known."""
        parts = self.signature.split("|")
        return parts[2] if len(parts) > 2 and parts[2] != "-" else None

    def as_prompt(self) -> str:
        """One line for the agent's context."""
        where = f" in {self.affected_module}" if self.affected_module else ""
        example = " ".join(self.example.split())[:160]
        return f"{self.error_type}{where} (seen {self.count}x): {example} -> {self.suggested_fix}"


class FailureKnowledgeBase:
    """Learned failure patterns in the store's ``learned_patterns`` and ``pattern_events`` tables."""

    def __init__(self, store: Store | None = None, *, retire_below: float = 0.3, gain: float = 1.25,
                 loss: float = 0.6, max_weight: float = 4.0) -> None:
        self.store = store if store is not None else Store()
        self.retire_below, self.gain, self.loss, self.max_weight = retire_below, gain, loss, max_weight

    # -- learning -------------------------------------------------------------------------

    def store_failure(self, attempt: AgentAttempt, *, now: dt.datetime | None = None) -> str | None:
        """Record the failure of ``attempt``; returns its pattern id, or None when there is nothing
        to learn: the attempt passed, or no executed run backs the failure (refused)."""
        ev = evidence_of(attempt)
        # not ``attempt.passed``: an attempt can fail (its agent ended in an error) while its test
        # run was green, and a green run teaches nothing; what counts is a run that shows a failure
        failed = (ev.exit_code not in (None, 0) or bool(ev.killed_reason) or ev.timed_out
                  or attempt.tests_failed > 0 or attempt.tests_errors > 0)
        if attempt.passed or not ev.executed or not failed:
            return None
        analysis = analyze_failure(ev)
        attempt.failure_analysis = analysis
        return self._upsert(analysis, attempt, now or utc_now())

    def _upsert(self, analysis: FailureAnalysis, attempt: AgentAttempt, now: dt.datetime) -> str:
        pid = "p" + hashlib.sha1(analysis.error_pattern.encode()).hexdigest()[:11]
        with self.store.connect(write=True) as con:
            row = con.execute("SELECT features, agents FROM learned_patterns WHERE pattern_id = ?",
                              [pid]).fetchone()
            if row is None:
                con.execute(
                    f"INSERT INTO learned_patterns ({_PATTERN_COLUMNS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, 1.0, 0, 0, FALSE)",
                    [pid, analysis.error_pattern, analysis.error_type, analysis.affected_module,
                     redact(analysis.message)[:500], analysis.suggested_fix, now, now,
                     json.dumps([attempt.feature_id]), json.dumps([attempt.agent] if attempt.agent else [])])
            else:
                features = _union(row[0], attempt.feature_id)
                agents = _union(row[1], attempt.agent)
                con.execute("UPDATE learned_patterns SET count = count + 1, last_seen = ?, features = ?, "
                            "agents = ? WHERE pattern_id = ?", [now, features, agents, pid])
            con.execute("INSERT INTO pattern_events VALUES (?, ?, ?, ?, 'seen', ?)",
                        [pid, attempt.attempt_id or None, attempt.feature_id, attempt.agent or None, now])
        return pid

    def record_outcome(self, shown_pattern_ids: Iterable[str], attempt: AgentAttempt, *,
                       now: dt.datetime | None = None) -> dict[str, str]:
        """Score the patterns an attempt was shown by how it went: passed -> each gains weight
        (``helped``); failed with a shown pattern's signature -> that one loses weight
        (``repeated``) and is retired below the threshold; failed otherwise -> ``shown`` only.
        A pattern is scored only on attempts it concerns (``credit.concerns``: a feature it was
        seen in, or a diff touching its module); for another attempt it keeps its weight and
        counts, the ``shown`` event is recorded and the outcome is ``unrelated``."""
        now = now or utc_now()
        ids = list(dict.fromkeys(shown_pattern_ids))
        if not ids:
            return {}
        signature = None
        if not attempt.passed:
            ev = evidence_of(attempt)
            signature = analyze_failure(ev).error_pattern if ev.executed else None
        events: dict[str, str] = {}
        with self.store.connect(write=True) as con:
            for pid in ids:
                row = con.execute("SELECT signature, weight, features, affected_module FROM learned_patterns "
                                  "WHERE pattern_id = ?", [pid]).fetchone()
                if row is None:
                    continue
                if not concerns(json.loads(row[2] or "[]"), row[3], attempt.feature_id, attempt.diff):
                    con.execute("INSERT INTO pattern_events VALUES (?, ?, ?, ?, 'shown', ?)",
                                [pid, attempt.attempt_id or None, attempt.feature_id, attempt.agent or None, now])
                    events[pid] = "unrelated"
                    continue
                weight, event = float(row[1]), "shown"
                if attempt.passed:
                    weight, event = min(self.max_weight, weight * self.gain), "helped"
                elif signature == row[0]:
                    weight, event = weight * self.loss, "repeated"
                con.execute("UPDATE learned_patterns SET shown = shown + 1, helped = helped + ?, weight = ?, "
                            "retired = retired OR ? WHERE pattern_id = ?",
                            [int(event == "helped"), weight, weight < self.retire_below, pid])
                for name in dict.fromkeys(["shown", event]):
                    con.execute("INSERT INTO pattern_events VALUES (?, ?, ?, ?, ?, ?)",
                                [pid, attempt.attempt_id or None, attempt.feature_id, attempt.agent or None,
                                 name, now])
                events[pid] = event
        return events

    # -- retrieval ------------------------------------------------------------------------

    def get_relevant_learnings(self, context: LearningContext | Mapping[str, Any] | None = None, *,
                               limit: int = 10) -> list[Learning]:
        """At most ``limit`` live patterns, most useful first: same agent, same or similar module,
        feature text sharing words with the pattern, weighted by usefulness and frequency."""
        ctx = context if isinstance(context, LearningContext) else LearningContext(**dict(context or {}))
        rows = self.store.query_df(
            "SELECT pattern_id, error_type, affected_module, example, suggested_fix, count, weight, agents, "
            "features, signature FROM learned_patterns WHERE NOT retired").to_dict("records")
        want = tokens(f"{ctx.feature_text} {ctx.module or ''}")
        specific = bool(ctx.agent or want)
        ranked = []
        for r in rows:
            agents = json.loads(r["agents"] or "[]")
            same_agent = bool(ctx.agent) and ctx.agent in agents
            module = r["affected_module"] or ""
            focus = ctx.module or ""
            same_module = bool(focus and module) and (
                module == focus or module.startswith(focus + ".") or focus.startswith(module + "."))
            have = tokens(f"{module} {r['example']} {r['error_type']} {' '.join(json.loads(r['features'] or '[]'))}")
            overlap = len(want & have) / len(want) if want else 0.0
            if specific and not (same_agent or same_module or overlap > 0):
                continue
            relevance = 1.0 + same_agent + 2.0 * same_module + 2.0 * overlap
            score = float(r["weight"]) * relevance * (1.0 + 0.5 * math.log(int(r["count"])))
            if r["error_type"] == "Unknown":
                score *= 0.5
            ranked.append(Learning(r["pattern_id"], r["error_type"], r["affected_module"], r["example"] or "",
                                   r["suggested_fix"] or "", int(r["count"]), float(r["weight"]), score,
                                   r["signature"]))
        ranked.sort(key=lambda x: (-x.score, -x.count, x.pattern_id))
        return ranked[:limit]

    def list_patterns(self, *, include_retired: bool = True) -> list[dict[str, Any]]:
        """Every pattern as a dict, most recently seen first."""
        where = "" if include_retired else "WHERE NOT retired"
        df = self.store.query_df(f"SELECT {_PATTERN_COLUMNS} FROM learned_patterns {where} "
                                 "ORDER BY last_seen DESC, pattern_id")
        return [_decode(r) for r in df.to_dict("records")]

    def get(self, pattern_id: str) -> dict[str, Any] | None:
        """One pattern with its events (oldest first), or None."""
        df = self.store.query_df(f"SELECT {_PATTERN_COLUMNS} FROM learned_patterns WHERE pattern_id = ?",
                                 [pattern_id])
        if df.empty:
            return None
        pattern = _decode(df.to_dict("records")[0])
        events = self.store.query_df("SELECT attempt_id, feature_id, agent, event, event_at AS at FROM pattern_events "
                                     "WHERE pattern_id = ? ORDER BY event_at, event", [pattern_id])
        pattern["events"] = events.to_dict("records")
        return pattern


def insert_patterns(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``learned_patterns`` rows as they are (a sample history); returns how many."""
    return store.insert_rows("learned_patterns", rows)


def insert_pattern_events(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``pattern_events`` rows as they are (a sample history); returns how many."""
    return store.insert_rows("pattern_events", rows)


def _union(raw: str | None, item: str) -> str:
    items = json.loads(raw or "[]")
    if item and item not in items:
        items.append(item)
    return json.dumps(items)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("features", "agents"):
        out[key] = json.loads(out[key] or "[]")
    out["retired"] = bool(out["retired"])
    return out
