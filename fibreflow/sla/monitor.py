"""SLA cycles: run every check concurrently, classify, store, alert; the watch loop and the gate.

Each check runs in its own daemon thread and gets its own timeout. The cycle waits for a
check at most until its timeout, then records status ``error`` ("timed out after Ns") and
moves on without waiting for the thread: one hanging source costs the cycle no more than its
timeout. A check whose previous run is still hanging is not started again (its reason says
so), so a dead source cannot pile up threads in ``sla watch``.

Status of a measured value (higher is worse for every check type):

* ``violation`` above ``error_after`` (default: the SLA threshold), or when the check itself
  says so (an HTTP status outside the expected ones);
* ``warn`` above ``warn_after``, when given;
* ``ok`` otherwise; ``error`` when the source could not be read (the reason says why).

This module is the only writer of ``sla_checks``: cycles, retention, and the sample and
benchmark histories (``insert_checks``, ``insert_synthetic_checks``) all write it here.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from fibreflow.errors import CheckError, ConfigError, FibreflowError, MissingEnvError, SLAViolationError
from fibreflow.sla.checks import Measurement, run_check
from fibreflow.sla.config import CheckSpec, SLAConfig
from fibreflow.sla.health import HealthServer, health_document
from fibreflow.sla.model import MAX_DAYS, MAX_INTERVAL_S, CheckResult, Status
from fibreflow.store import Store
from fibreflow.store.lake import compact_store, lake_of

log = logging.getLogger("fibreflow.sla")

RETENTION_EVERY_S = 3600.0
FAILING = frozenset({"violation", "error"})


class SLAWarning(UserWarning):
    """Issued by :func:`require_fresh_data` under ``policy="warn"``."""


class AlertSink(Protocol):
    """What the monitor needs from :class:`fibreflow.sla.alerts.AlertDispatcher`."""

    def evaluate(self, results: Sequence[CheckResult]) -> Any: ...

    def deliver_pending(self) -> Any: ...


def classify(spec: CheckSpec, measurement: Measurement) -> tuple[Status, str | None]:
    """Status and reason of one measurement against its SLA."""
    value = measurement.value
    if measurement.violated:
        return "violation", measurement.reason
    if value > spec.violation_above:
        bound = "error_after" if spec.error_after is not None else "threshold"
        return "violation", f"{value:.4g} above {bound} {spec.violation_above:g}"
    if spec.warn_after is not None and value > spec.warn_after:
        return "warn", f"{value:.4g} above warn_after {spec.warn_after:g}"
    return "ok", measurement.reason


class SLAMonitor:
    """Runs the checks of an SLA config and records every result in the store."""

    def __init__(self, config: SLAConfig, *, store: Store, alerts: AlertSink | None = None,
                 compact_every_s: float = 0.0) -> None:
        self.config = config
        self.store = store
        self.alerts = alerts
        #: ``watch`` compacts a lake store this often (``store.compact_every_s``; 0: never)
        self.compact_every_s = compact_every_s if lake_of(store) is not None else 0.0
        self.last_results: list[CheckResult] | None = None
        self.last_cycle_id: str | None = None
        self.cycles = 0
        self.health: HealthServer | None = None
        self._inflight: dict[str, threading.Thread] = {}

    # -- one cycle ----------------------------------------------------------------------

    def run_checks(self, names: Iterable[str] | None = None) -> list[CheckResult]:
        """Run the checks concurrently and return their results, without storing or alerting."""
        specs = self.config.select(names)
        cycle_id = uuid.uuid4().hex[:12]
        checked_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        boxes: dict[str, list[CheckResult]] = {}
        threads: dict[str, threading.Thread] = {}
        results: dict[str, CheckResult] = {}
        for spec in specs:
            previous = self._inflight.get(spec.name)
            if previous is not None and previous.is_alive():
                results[spec.name] = self._result(
                    spec, None, "error", f"still running from an earlier cycle (timed out after {spec.timeout:g}s)",
                    checked_at, 0.0, cycle_id)
                continue
            box: list[CheckResult] = []
            thread = threading.Thread(target=self._worker, args=(spec, box, checked_at, cycle_id),
                                      name=f"sla-check-{spec.name}", daemon=True)
            boxes[spec.name], threads[spec.name] = box, thread
            thread.start()
        for spec in sorted((s for s in specs if s.name in threads), key=lambda s: s.timeout):
            thread = threads[spec.name]
            thread.join(max(0.0, started + spec.timeout - time.monotonic()))
            if thread.is_alive() or not boxes[spec.name]:
                self._inflight[spec.name] = thread  # left running: daemon, bounded by its own I/O timeouts
                results[spec.name] = self._result(spec, None, "error", f"timed out after {spec.timeout:g}s",
                                                  checked_at, spec.timeout, cycle_id)
            else:
                self._inflight.pop(spec.name, None)
                results[spec.name] = boxes[spec.name][0]
        return [results[s.name] for s in specs]

    def check_all_slas(self, names: Iterable[str] | None = None) -> list[CheckResult]:
        """Run the checks, store one ``sla_checks`` row each (one insert), then evaluate alerts."""
        results = self.run_checks(names)
        self.store.insert_rows("sla_checks", [r.as_row() for r in results])
        self.last_results = results
        self.last_cycle_id = results[0].cycle_id if results else None
        self.cycles += 1
        if self.alerts is not None:
            try:
                self.alerts.evaluate(results)
                self.alerts.deliver_pending()
            except FibreflowError as exc:  # the outbox keeps undelivered alerts; monitoring goes on
                log.warning("alerts: %s", exc)
        return results

    def _worker(self, spec: CheckSpec, box: list[CheckResult], checked_at: dt.datetime, cycle_id: str) -> None:
        started = time.perf_counter()
        try:
            measurement = run_check(spec.type, spec.params, timeout=spec.timeout, key=f"checks.{spec.name}")
        except (CheckError, MissingEnvError) as exc:
            box.append(self._result(spec, None, "error", str(exc), checked_at,
                                    time.perf_counter() - started, cycle_id))
            return
        except Exception as exc:  # a bug in one check must not take the cycle down
            log.exception("check %s failed unexpectedly", spec.name)
            box.append(self._result(spec, None, "error", f"{type(exc).__name__}: {exc}", checked_at,
                                    time.perf_counter() - started, cycle_id))
            return
        status, reason = classify(spec, measurement)
        box.append(self._result(spec, measurement.value, status, reason, checked_at,
                                time.perf_counter() - started, cycle_id, measurement.details))

    @staticmethod
    def _result(spec: CheckSpec, value: float | None, status: Status, reason: str | None,
                checked_at: dt.datetime, duration_s: float, cycle_id: str,
                details: dict[str, Any] | None = None) -> CheckResult:
        return CheckResult(name=spec.name, status=status, value=value, threshold=spec.threshold,
                           checked_at=checked_at, duration_s=duration_s, check_type=spec.type,
                           reason=reason, warn_after=spec.warn_after, error_after=spec.error_after,
                           cycle_id=cycle_id, details=details or {})

    # -- housekeeping -------------------------------------------------------------------

    def apply_retention(self, now: dt.datetime | None = None) -> int:
        """Delete ``sla_checks`` rows older than ``monitoring.retention_days``; returns how many."""
        days = self.config.monitoring.retention_days
        if not 1 <= days <= MAX_DAYS:  # validated at load; a settings copy made in code is checked here
            raise ConfigError(f"monitoring.retention_days must be 1 to {MAX_DAYS} days, got {days!r}: "
                              "no rows were deleted", key="monitoring.retention_days")
        now = now or dt.datetime.now(dt.UTC)
        cutoff = now - dt.timedelta(days=days)
        with self.store.connect(write=True) as con:
            row = con.execute("DELETE FROM sla_checks WHERE checked_at < ?", [cutoff]).fetchone()
        return int(row[0]) if row else 0

    # -- the watch loop -----------------------------------------------------------------

    def watch(self, interval: float | None = None, *, health_port: int | None = None,
              cycles: int | None = None, stop_event: threading.Event | None = None) -> int:
        """Run cycles every ``interval`` s (default monitoring.check_interval) until stopped.

        Stops after ``cycles`` cycles, when ``stop_event`` is set, or on KeyboardInterrupt
        (propagated). With ``health_port`` (0 picks a free port), or after ``serve_health``, it
        serves ``GET /health`` on 127.0.0.1 (see :mod:`fibreflow.sla.health`) until it returns.
        Returns the number of cycles run.
        """
        interval = self.config.monitoring.check_interval if interval is None else interval
        if not 0 <= interval <= MAX_INTERVAL_S:  # also refuses NaN
            raise ConfigError(f"the interval must be 0 to {MAX_INTERVAL_S:g} seconds, got {interval!r}",
                              key="monitoring.check_interval")
        stop = stop_event or threading.Event()
        if health_port is not None and self.health is None:
            self.serve_health(health_port)
        ran = 0
        last_retention = -RETENTION_EVERY_S
        last_compact = time.monotonic()  # not at start: a watcher restarted in a loop must not compact each time
        try:
            while not stop.is_set() and (cycles is None or ran < cycles):
                started = time.monotonic()
                try:
                    self.check_all_slas()
                    if started - last_retention >= RETENTION_EVERY_S:
                        self.apply_retention()
                        last_retention = started
                    if self.compact_every_s and started - last_compact >= self.compact_every_s:
                        last_compact = started
                        log.info("store compacted: %s", compact_store(self.store).to_dict())
                except FibreflowError as exc:  # e.g. the store busy for too long: try again next cycle
                    log.error("SLA cycle failed: %s", exc)
                ran += 1
                if cycles is not None and ran >= cycles:
                    break
                stop.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            if self.health is not None:
                self.health.close()
                self.health = None
        return ran

    def serve_health(self, port: int) -> HealthServer:
        """Start ``GET /health`` on 127.0.0.1:``port`` (0 picks one); ``watch`` stops it when it ends."""
        self.health = HealthServer(self.health_document, port=port)
        return self.health

    def health_document(self) -> dict[str, Any]:
        """The ``GET /health`` body for the last cycle."""
        return health_document(self.last_results, cycle_id=self.last_cycle_id, cycles=self.cycles)


def insert_checks(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``sla_checks`` rows as they are (a sample history, a benchmark's load); returns how
    many. This module is the table's only writer."""
    return store.insert_rows("sla_checks", rows)


def insert_synthetic_checks(store: Store, names: Sequence[str], *, total: int, now: dt.datetime) -> None:
    """``total`` synthetic ``sla_checks`` rows, the SLAs ``names`` in turn, one cycle a minute back
    from ``now``, 3 % of them violations. Generated inside DuckDB: a benchmark's month of history
    (half a million rows) in seconds rather than minutes of inserts."""
    with store.connect(write=True) as con:
        con.execute(
            "INSERT INTO sla_checks (cycle_id, name, check_type, value, threshold, status, reason, "
            "checked_at, duration_s) "
            "SELECT 'bench-' || (i // $n), list_extract($names, (i % $n + 1)::INTEGER), 'bench', "
            "random() * 400, 300, CASE WHEN random() < 0.03 THEN 'violation' ELSE 'ok' END, NULL, "
            "$now - to_minutes((i // $n)::INTEGER), 0.01 FROM range($total) t(i)",
            {"n": len(names), "names": list(names), "now": now, "total": total})


def require_fresh_data(names: Iterable[str] | None = None, policy: Literal["warn", "abort"] = "warn", *,
                       config: SLAConfig | None = None, store: Store | None = None) -> list[CheckResult]:
    """Gate for agents: run the checks (all, or ``names``) and act on stale data.

    Checks with status ``violation`` or ``error`` (an unreadable source is not known to be
    fresh) raise :class:`SLAViolationError` listing each of them under ``policy="abort"``, and
    issue one :class:`SLAWarning` under ``policy="warn"``. Results are stored like any cycle;
    no alerts are sent. Defaults: the configured SLA file and store. Returns the results.
    """
    if policy not in ("warn", "abort"):
        raise ConfigError(f"policy must be 'warn' or 'abort', not {policy!r}", key="policy")
    if config is None:
        from fibreflow.config import load_settings
        from fibreflow.sla.config import load_sla_config

        settings = load_settings()
        config = load_sla_config(settings.sla.config_path, settings=settings)
    results = SLAMonitor(config, store=store or Store()).check_all_slas(names)
    failing = [r for r in results if r.status in FAILING]
    if failing:
        if policy == "abort":
            raise SLAViolationError(failing)
        summary = "; ".join(f"{r.name}: {r.status}" + (f" ({r.reason})" if r.reason else "") for r in failing)
        warnings.warn(f"data freshness SLAs not met: {summary}", SLAWarning, stacklevel=2)
    return results
