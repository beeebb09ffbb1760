"""Forward migrations of the DuckDB store; each runs once, in order, in one transaction, and the
owner of each table.

Later issues append migrations; never edit one that has shipped. Each table has one owner
module (``TABLE_OWNERS``), the only one whose code inserts, updates or deletes its rows; the
others call the owner, so a table's write paths can be read in one place
(``tests/store/test_writers.py`` checks it).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "SLA checks, alert outbox and alert state", """
        CREATE SEQUENCE sla_checks_id;
        CREATE TABLE sla_checks (
            id BIGINT DEFAULT nextval('sla_checks_id'),
            cycle_id VARCHAR,
            name VARCHAR NOT NULL,
            check_type VARCHAR,
            value DOUBLE,
            threshold DOUBLE,
            warn_after DOUBLE,
            error_after DOUBLE,
            status VARCHAR NOT NULL,
            reason VARCHAR,
            checked_at TIMESTAMPTZ NOT NULL,
            duration_s DOUBLE
        );
        CREATE SEQUENCE alert_outbox_id;
        CREATE TABLE alert_outbox (
            id BIGINT DEFAULT nextval('alert_outbox_id'),
            dedupe_key VARCHAR NOT NULL,
            sla_name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            severity VARCHAR,
            action VARCHAR NOT NULL,
            destination VARCHAR,
            message VARCHAR NOT NULL,
            payload JSON,
            status VARCHAR NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TIMESTAMPTZ NOT NULL,
            next_attempt_at TIMESTAMPTZ NOT NULL,
            delivered_at TIMESTAMPTZ,
            last_error VARCHAR
        );
        CREATE TABLE alert_state (
            rule_key VARCHAR PRIMARY KEY,
            sla_name VARCHAR NOT NULL,
            active BOOLEAN NOT NULL,
            since TIMESTAMPTZ,
            last_value DOUBLE,
            last_notified_at TIMESTAMPTZ
        );
    """),
    Migration(2, "runs, features, attempts and sandbox sessions", """
        CREATE TABLE runs (
            run_id VARCHAR NOT NULL,
            goal VARCHAR,
            source VARCHAR,
            status VARCHAR NOT NULL,
            backend VARCHAR,
            profile VARCHAR,
            agent VARCHAR,
            attempts_per_feature INTEGER,
            workers INTEGER,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ,
            error VARCHAR
        );
        CREATE TABLE features (
            run_id VARCHAR NOT NULL,
            feature_id VARCHAR NOT NULL,
            description VARCHAR,
            dependencies JSON,
            test_command VARCHAR,
            status VARCHAR NOT NULL,
            solved_tier VARCHAR,
            winner_attempt_id VARCHAR,
            started_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ
        );
        CREATE TABLE attempts (
            attempt_id VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            feature_id VARCHAR NOT NULL,
            iteration INTEGER DEFAULT 1,
            agent VARCHAR,
            tier VARCHAR,
            sandbox_id VARCHAR,
            status VARCHAR NOT NULL,
            exit_code INTEGER,
            tests_passed INTEGER,
            tests_failed INTEGER,
            coverage DOUBLE,
            duration_s DOUBLE,
            cost_usd DOUBLE,
            killed_reason VARCHAR,
            error VARCHAR,
            diff VARCHAR,
            log VARCHAR,
            started_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ
        );
        CREATE TABLE sandbox_sessions (
            session_id VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,
            profile VARCHAR,
            isolation VARCHAR,
            run_id VARCHAR,
            feature_id VARCHAR,
            attempt_id VARCHAR,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ,
            cpu_s DOUBLE,
            est_cost_usd DOUBLE,
            outcome VARCHAR,
            killed_reason VARCHAR
        );
    """),
    Migration(3, "llm_calls: one row per model call try, priced from its usage", """
        CREATE TABLE llm_calls (
            call_id VARCHAR NOT NULL,
            run_id VARCHAR,
            attempt_id VARCHAR,
            agent VARCHAR,
            tier VARCHAR,
            model VARCHAR NOT NULL,
            try_no INTEGER,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cache_creation_input_tokens BIGINT,
            cache_read_input_tokens BIGINT,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            status VARCHAR NOT NULL,
            stop_reason VARCHAR,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            task_text VARCHAR
        );
    """),
    Migration(4, "failure knowledge base: learned patterns and their events", """
        CREATE TABLE learned_patterns (
            pattern_id VARCHAR PRIMARY KEY,
            signature VARCHAR NOT NULL UNIQUE,
            error_type VARCHAR NOT NULL,
            affected_module VARCHAR,
            example VARCHAR,
            suggested_fix VARCHAR,
            count INTEGER NOT NULL DEFAULT 1,
            first_seen TIMESTAMPTZ NOT NULL,
            last_seen TIMESTAMPTZ NOT NULL,
            features JSON,
            agents JSON,
            weight DOUBLE NOT NULL DEFAULT 1.0,
            shown INTEGER NOT NULL DEFAULT 0,
            helped INTEGER NOT NULL DEFAULT 0,
            retired BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE TABLE pattern_events (
            pattern_id VARCHAR NOT NULL,
            attempt_id VARCHAR,
            feature_id VARCHAR,
            agent VARCHAR,
            event VARCHAR NOT NULL,
            event_at TIMESTAMPTZ NOT NULL
        );
    """),
    Migration(5, "autopilot: runs awaiting approval and every step of them", """
        CREATE TABLE autopilot_runs (
            run_id VARCHAR PRIMARY KEY,
            goal VARCHAR,
            repo VARCHAR NOT NULL,
            base_ref VARCHAR,
            base_commit VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            options JSON,
            features JSON,
            branch VARCHAR,
            commit_sha VARCHAR,
            winner_attempt_id VARCHAR,
            staging_url VARCHAR,
            needs_review BOOLEAN,
            cost_usd DOUBLE,
            owner_pid INTEGER,
            decided_by VARCHAR,
            decision_reason VARCHAR,
            decided_at TIMESTAMPTZ,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE autopilot_steps (
            run_id VARCHAR NOT NULL,
            seq INTEGER NOT NULL,
            step VARCHAR NOT NULL,
            feature_id VARCHAR,
            try_no INTEGER NOT NULL,
            status VARCHAR NOT NULL,
            detail JSON,
            error VARCHAR,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ
        );
    """),
    Migration(6, "runs: the orchestrator process (pid, start time, host) and when its crash was noticed", """
        ALTER TABLE runs ADD COLUMN orchestrator_pid INTEGER;
        ALTER TABLE runs ADD COLUMN orchestrator_start BIGINT;
        ALTER TABLE runs ADD COLUMN orchestrator_host VARCHAR;
        ALTER TABLE runs ADD COLUMN crash_noticed_at TIMESTAMPTZ;
    """),
    Migration(7, "builds: why an attempt ran on its tier, what kind of error ended it; a feature's reason, "
                 "data-freshness gate and budget stop", """
        ALTER TABLE attempts ADD COLUMN tier_reason VARCHAR;
        ALTER TABLE attempts ADD COLUMN error_kind VARCHAR;
        ALTER TABLE features ADD COLUMN reason VARCHAR;
        ALTER TABLE features ADD COLUMN data_gate VARCHAR;
        ALTER TABLE features ADD COLUMN data_violations JSON;
    """),
    # a Quack client (the store server's) cannot attach a database with a nextval() default
    Migration(8, "ids from their writers (new_row_id), not from a sequence default", """
        ALTER TABLE sla_checks ALTER COLUMN id DROP DEFAULT;
        ALTER TABLE alert_outbox ALTER COLUMN id DROP DEFAULT;
    """),
)

LATEST_VERSION = MIGRATIONS[-1].version

# What a store without constraints (DuckLake) cannot hold. Migrations are written once, for the
# embedded file; ``migration_sql`` drops these for such a store, and the owning writers enforce
# what they meant: one row per key (check, then insert or delete + insert, under the lake's writer
# lock) and ids from ``new_row_id`` instead of a sequence.
_NO_CONSTRAINTS = (
    re.compile(r"CREATE\s+SEQUENCE\s+[^;]+;", re.IGNORECASE),
    re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+[^;]+;", re.IGNORECASE),
    re.compile(r"\s+DEFAULT\s+nextval\s*\([^)]*\)", re.IGNORECASE),
    re.compile(r"ALTER\s+TABLE\s+\w+\s+ALTER\s+COLUMN\s+\w+\s+DROP\s+DEFAULT\s*;", re.IGNORECASE),
    re.compile(r"\s+PRIMARY\s+KEY\b", re.IGNORECASE),
    re.compile(r"\s+UNIQUE\b", re.IGNORECASE),
)
_last_id = 0
_id_guard = threading.Lock()


def migration_sql(migration: Migration, *, constraints: bool = True) -> str:
    """The SQL of ``migration`` for a store that does (``constraints``) or does not support
    sequences, primary keys, unique constraints and indexes."""
    if constraints:
        return migration.sql
    sql = migration.sql
    for pattern in _NO_CONSTRAINTS:
        sql = pattern.sub("", sql)
    return sql


#: table -> its id column, once filled by a sequence default (migration 8 dropped those defaults:
#: a Quack client cannot attach them, a lake has none); ``Store.insert_rows`` and ``BatchWriter``
#: fill it with ``new_row_id()`` when a row has none, so ids keep insertion order in every mode
ROW_ID_COLUMNS: dict[str, str] = {"sla_checks": "id", "alert_outbox": "id"}


def new_row_id() -> int:
    """A BIGINT id for a new row of a table whose id came from a sequence: microseconds since the
    epoch times 1024 plus random bits, increasing within a process, so ids from several hosts do
    not collide and sort by age (above every id a sequence handed out before)."""
    global _last_id
    with _id_guard:
        candidate = (time.time_ns() // 1000) * 1024 + secrets.randbelow(1024)
        _last_id = max(candidate, _last_id + 1)
        return _last_id

#: table -> the one module that writes it (names, not imports: owners sit in later layers)
TABLE_OWNERS: dict[str, str] = {
    "schema_version": "fibreflow.store.connection",
    "sla_checks": "fibreflow.sla.monitor",
    "alert_outbox": "fibreflow.sla.outbox",
    "alert_state": "fibreflow.sla.alerts",
    "runs": "fibreflow.build.records",
    "features": "fibreflow.build.records",
    "attempts": "fibreflow.build.records",
    "sandbox_sessions": "fibreflow.sandbox.records",
    "llm_calls": "fibreflow.models.client",
    "learned_patterns": "fibreflow.learning.knowledge",
    "pattern_events": "fibreflow.learning.knowledge",
    "autopilot_runs": "fibreflow.autopilot.state",
    "autopilot_steps": "fibreflow.autopilot.state",
}
