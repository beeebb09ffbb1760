"""The ``alert_outbox`` table: every notification is queued here before anything is sent.

Row life: ``pending`` -> (claimed) ``sending`` -> ``delivered``; a failed send goes back to
``pending`` with ``attempts + 1``, ``last_error`` and ``next_attempt_at`` pushed out by an
exponential backoff (at least the far side's ``Retry-After``). Rows are never dropped.

Delivery is **at least once**. A row is claimed (``sending``, with a lease in
``next_attempt_at``) in one short unit of work, sent with no store connection held, and marked
``delivered`` in its own short unit of work right after the answer. If the process dies
between the send and that mark, the lease expires and the row is sent again, with
``last_error`` saying a duplicate is possible: for alerts a rare duplicate beats a lost page.
Webhook bodies carry ``dedupe_key`` (and an ``Idempotency-Key`` header) so a receiver can drop
it. Claims happen under the store's exclusive lock, so two deliverers never send the same row.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from fibreflow.sla.delivery import Outgoing
from fibreflow.store import Store
from fibreflow.store.schema import new_row_id

INTERRUPTED = "previous delivery attempt was interrupted (process stopped mid-send); re-sending, a duplicate is possible"
_COLUMNS = "id, dedupe_key, sla_name, kind, severity, action, destination, message, payload, attempts, status"


@dataclass(frozen=True)
class DeliveryReport:
    """What one ``deliver_pending`` call did."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json`` output."""
        return {"delivered": self.delivered, "failed": self.failed, "pending": self.pending,
                "errors": list(self.errors)}


@dataclass(frozen=True)
class Backoff:
    """Retry schedule: ``base_s * 2**(attempts-1)`` capped at ``max_s``, never below Retry-After."""

    base_s: float = 10.0
    max_s: float = 600.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Seconds until the next try after ``attempts`` failed tries."""
        delay = min(self.base_s * 2 ** max(attempts - 1, 0), self.max_s)
        return max(delay, retry_after or 0.0)


def queue(con: duckdb.DuckDBPyConnection, row: Mapping[str, Any]) -> int | None:
    """Insert one notification inside the caller's transaction; None if its dedupe_key exists.

    The id is made here (``new_row_id``), not by a sequence, and the dedupe check is a read in the
    same transaction: a lake store has neither sequences nor RETURNING, and one path serves every mode."""
    if con.execute("SELECT 1 FROM alert_outbox WHERE dedupe_key = ?", [row["dedupe_key"]]).fetchone():
        return None
    outbox_id = new_row_id()
    con.execute(
        """INSERT INTO alert_outbox (id, dedupe_key, sla_name, kind, severity, action, destination, message,
                                     payload, status, attempts, created_at, next_attempt_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)""",
        [outbox_id, row["dedupe_key"], row["sla_name"], row["kind"], row["severity"], row["action"],
         row["destination"], row["message"], json.dumps(row["payload"]), row["created_at"], row["created_at"]])
    return outbox_id


class Outbox:
    """Claims, marks and counts outbox rows; each method is one short unit of work."""

    def __init__(self, store: Store, *, backoff: Backoff | None = None, lease_s: float = 300.0) -> None:
        self.store = store
        self.backoff = backoff or Backoff()
        self.lease_s = lease_s

    def claim_due(self, now: dt.datetime, *, limit: int = 100) -> list[Outgoing]:
        """Mark due rows (and ``sending`` rows whose lease expired) as ``sending`` and return them."""
        lease_until = now + dt.timedelta(seconds=self.lease_s)
        with self.store.connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                rows = con.execute(
                    f"""SELECT {_COLUMNS} FROM alert_outbox
                        WHERE status IN ('pending', 'sending') AND next_attempt_at <= ?
                        ORDER BY id LIMIT ?""", [now, limit]).fetchall()
                ids = [r[0] for r in rows]
                stale = [r[0] for r in rows if r[10] == "sending"]
                if ids:
                    con.execute("UPDATE alert_outbox SET status = 'sending', next_attempt_at = ? "
                                "WHERE id IN (SELECT unnest(?::BIGINT[]))", [lease_until, ids])
                if stale:
                    con.execute("UPDATE alert_outbox SET last_error = ? WHERE id IN (SELECT unnest(?::BIGINT[]))",
                                [INTERRUPTED, stale])
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return [Outgoing(id=r[0], dedupe_key=r[1], sla_name=r[2], kind=r[3], severity=r[4], action=r[5],
                         destination=r[6], message=r[7], payload=_json(r[8]), attempts=r[9]) for r in rows]

    def mark_delivered(self, item: Outgoing, now: dt.datetime) -> None:
        """Record a successful send (right after it, in its own unit of work)."""
        self.store.execute(
            "UPDATE alert_outbox SET status = 'delivered', delivered_at = ?, attempts = attempts + 1 "
            "WHERE id = ? AND status = 'sending'", [now, item.id])

    def mark_retry(self, item: Outgoing, now: dt.datetime, error: str, *, retry_after: float | None,
                   count_attempt: bool = True) -> dt.datetime:
        """Put a row back to ``pending`` for a later try; returns when that is."""
        attempts = item.attempts + (1 if count_attempt else 0)
        due = now + dt.timedelta(seconds=self.backoff.delay(max(attempts, 1), retry_after))
        self.store.execute(
            "UPDATE alert_outbox SET status = 'pending', attempts = ?, last_error = ?, next_attempt_at = ? "
            "WHERE id = ? AND status = 'sending'", [attempts, error[:1000], due, item.id])
        return due

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        with self.store.connect() as con:
            rows = con.execute("SELECT status, count(*) FROM alert_outbox GROUP BY status").fetchall()
        return {status: int(n) for status, n in rows}

    def rows(self, *, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Outbox rows as dicts (oldest first), optionally only some statuses."""
        sql = "SELECT * FROM alert_outbox"
        params: list[Any] = []
        if statuses:
            sql += " WHERE status IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(statuses))
        with self.store.connect() as con:
            cur = con.execute(sql + " ORDER BY id", params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        loaded = json.loads(value) if value else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


__all__ = ["Backoff", "DeliveryReport", "Outbox", "queue"]
