"""Alert rules over check results: cooldown, maintenance windows, resolved notices, the outbox rows."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fibreflow.config import Settings
from fibreflow.errors import ConditionError, ConfigError
from fibreflow.sla.alerts import AlertDispatcher, AlertState, decide, window_active
from fibreflow.sla.model import AlertRule, CheckResult, MaintenanceWindow, MonitoringSettings
from fibreflow.sla.outbox import queue
from fibreflow.store import Store

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)  # a Monday


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def result(value: float | None, when: dt.datetime, *, name: str = "lag", threshold: float = 300,
           status: str | None = None, reason: str | None = None) -> CheckResult:
    if status is None:
        status = "error" if value is None else ("violation" if value > threshold else "ok")
    return CheckResult(name=name, status=status, value=value, threshold=threshold,  # type: ignore[arg-type]
                       checked_at=when, duration_s=0.01, reason=reason)


def dispatcher(store: Store, *rules: AlertRule, cooldown: float = 300,
               windows: list[MaintenanceWindow] | None = None) -> AlertDispatcher:
    monitoring = MonitoringSettings(cooldown=cooldown, maintenance_windows=windows or [])
    return AlertDispatcher(store, list(rules) or [AlertRule(condition="lag > 300")], monitoring, Settings())


def outbox(store: Store) -> list[dict]:
    df = store.query_df("SELECT kind, message, sla_name, severity, action, destination, status, dedupe_key, "
                        "payload FROM alert_outbox ORDER BY id")
    return df.to_dict("records")


def test_violation_is_queued_with_the_rendered_template(store: Store) -> None:
    rule = AlertRule(condition="lag > 300", channel="#fibreflow-alerts", severity="critical",
                     message="Neon->Convex sync delayed: {value}s (SLA: {threshold}s) [{severity}/{status}]")
    d = dispatcher(store, rule)
    ids = d.evaluate([result(412.37, at(0))], now=at(0))
    assert len(ids) == 1
    [row] = outbox(store)
    assert row["message"] == "Neon->Convex sync delayed: 412s (SLA: 300s) [critical/violation]"
    assert (row["kind"], row["sla_name"], row["severity"], row["action"], row["destination"], row["status"]) == \
        ("violation", "lag", "critical", "slack", "#fibreflow-alerts", "pending")
    payload = json.loads(row["payload"])
    assert payload["value"] == 412.37 and payload["threshold"] == 300
    header = payload["blocks"][0]
    assert header["type"] == "header" and "CRITICAL" in header["text"]["text"]
    fields = {f["text"] for f in payload["blocks"][1]["fields"]}
    assert {"*Value*\n412", "*Threshold*\n300", "*Status*\nviolation"} <= fields


def test_ok_results_queue_nothing(store: Store) -> None:
    d = dispatcher(store)
    assert d.evaluate([result(12, at(0))], now=at(0)) == []
    assert d.evaluate([result(13, at(60), name="other")], now=at(60)) == []  # rule's SLA not in the cycle
    assert outbox(store) == []


def test_cooldown_suppresses_repeats_then_lets_one_through(store: Store) -> None:
    d = dispatcher(store, cooldown=300)
    assert len(d.evaluate([result(400, at(0))], now=at(0))) == 1
    for s in (60, 120, 240, 299):
        assert d.evaluate([result(400 + s, at(s))], now=at(s)) == [], s
    assert len(d.evaluate([result(800, at(300))], now=at(300))) == 1
    assert d.evaluate([result(900, at(360))], now=at(360)) == []
    assert [r["kind"] for r in outbox(store)] == ["violation", "violation"]


def test_rule_cooldown_overrides_the_default(store: Store) -> None:
    d = dispatcher(store, AlertRule(condition="lag > 300", cooldown=60), cooldown=3600)
    assert len(d.evaluate([result(400, at(0))], now=at(0))) == 1
    assert len(d.evaluate([result(400, at(60))], now=at(60))) == 1


def test_resolved_notification_when_the_violation_clears(store: Store) -> None:
    d = dispatcher(store)
    d.evaluate([result(400, at(0))], now=at(0))
    ids = d.evaluate([result(20, at(60))], now=at(60))
    assert len(ids) == 1
    assert d.evaluate([result(10, at(120))], now=at(120)) == []  # once per episode
    rows = outbox(store)
    assert [r["kind"] for r in rows] == ["violation", "resolved"]
    assert rows[1]["message"] == "lag resolved: 20 (SLA: 300)"
    state = store.query_df("SELECT * FROM alert_state").iloc[0]
    assert not state["active"] and state["last_value"] == 10


def test_no_resolved_when_disabled_or_never_announced(store: Store) -> None:
    quiet = dispatcher(store, AlertRule(condition="lag > 300", notify_resolved=False))
    quiet.evaluate([result(400, at(0))], now=at(0))
    assert quiet.evaluate([result(1, at(60))], now=at(60)) == []

    flappy = dispatcher(store, AlertRule(condition="lag > 299", cooldown=300))
    flappy.evaluate([result(400, at(0))], now=at(0))          # announced
    flappy.evaluate([result(1, at(30))], now=at(30))          # resolved
    assert flappy.evaluate([result(400, at(60))], now=at(60)) == []  # inside cooldown: silent episode
    assert flappy.evaluate([result(1, at(90))], now=at(90)) == []    # so no resolved for it either
    assert [r["kind"] for r in outbox(store)] == ["violation", "violation", "resolved"]


def test_unreadable_source_is_not_a_recovery(store: Store) -> None:
    d = dispatcher(store)
    d.evaluate([result(400, at(0))], now=at(0))
    assert d.evaluate([result(None, at(60), reason="connection refused")], now=at(60)) == []
    assert store.scalar("SELECT active FROM alert_state") is True
    assert len(d.evaluate([result(5, at(120))], now=at(120))) == 1  # the real recovery


def test_status_rule_alerts_on_errors_and_scrubs_reasons(store: Store) -> None:
    rule = AlertRule(condition='status(lag) == "error"', message="{name} unreadable: {reason}")
    d = dispatcher(store, rule)
    reason = "could not connect to postgresql://ops:hunter2secret@db.internal:5432/prod"
    assert len(d.evaluate([result(None, at(0), reason=reason)], now=at(0))) == 1
    [row] = outbox(store)
    assert "hunter2secret" not in row["message"] and "hunter2secret" not in row["payload"]
    assert "postgresql://ops:***@db.internal" in row["message"]


def test_maintenance_window_silences_and_state_stays_consistent(store: Store) -> None:
    window = MaintenanceWindow(start="12:10", end="12:20")
    d = dispatcher(store, windows=[window], cooldown=0)
    d.evaluate([result(400, at(0))], now=at(0))                   # announced before the window
    assert d.evaluate([result(450, at(660))], now=at(660)) == []  # 12:11, still violated: silent
    assert d.evaluate([result(10, at(720))], now=at(720)) == []   # 12:12, clears: resolved must wait
    assert store.scalar("SELECT active FROM alert_state") is True
    ids = d.evaluate([result(10, at(1260))], now=at(1260))        # 12:21, after the window
    assert len(ids) == 1
    assert [r["kind"] for r in outbox(store)] == ["violation", "resolved"]
    assert store.scalar("SELECT active FROM alert_state") is False


def test_violation_starting_in_a_window_is_announced_after_it(store: Store) -> None:
    d = dispatcher(store, windows=[MaintenanceWindow(start="11:55", end="12:05")])
    assert d.evaluate([result(400, at(0))], now=at(0)) == []
    assert store.scalar("SELECT active FROM alert_state") is True
    assert len(d.evaluate([result(400, at(301))], now=at(301))) == 1

    short = dispatcher(store, AlertRule(condition="lag > 100"), windows=[MaintenanceWindow(start="11:55", end="12:05")])
    short.evaluate([result(400, at(0))], now=at(0))
    assert short.evaluate([result(10, at(120))], now=at(120)) == []   # began and ended inside: silent
    assert short.evaluate([result(10, at(400))], now=at(400)) == []


def test_window_limited_to_other_slas_does_not_silence(store: Store) -> None:
    d = dispatcher(store, windows=[MaintenanceWindow(start="00:00", end="23:59", slas=["vlm_age"])])
    assert len(d.evaluate([result(400, at(0))], now=at(0))) == 1
    assert d.in_maintenance({"vlm_age"}, at(0)) and not d.in_maintenance({"lag"}, at(0))


@pytest.mark.parametrize(("window", "when", "inside"), [
    (MaintenanceWindow(start="02:00", end="03:00"), dt.datetime(2026, 1, 5, 2, 30, tzinfo=dt.UTC), True),
    (MaintenanceWindow(start="02:00", end="03:00"), dt.datetime(2026, 1, 5, 3, 0, tzinfo=dt.UTC), False),
    (MaintenanceWindow(start="23:00", end="01:00"), dt.datetime(2026, 1, 5, 23, 30, tzinfo=dt.UTC), True),
    (MaintenanceWindow(start="23:00", end="01:00"), dt.datetime(2026, 1, 6, 0, 30, tzinfo=dt.UTC), True),
    (MaintenanceWindow(start="23:00", end="01:00"), dt.datetime(2026, 1, 6, 1, 30, tzinfo=dt.UTC), False),
    # days name the day the window starts on: Sunday 23:00 -> Monday 01:00
    (MaintenanceWindow(start="23:00", end="01:00", days=["sun"]), dt.datetime(2026, 1, 5, 0, 30, tzinfo=dt.UTC), True),
    (MaintenanceWindow(start="23:00", end="01:00", days=["mon"]), dt.datetime(2026, 1, 5, 0, 30, tzinfo=dt.UTC), False),
    (MaintenanceWindow(start="02:00", end="03:00", days=["sat", "sun"]),
     dt.datetime(2026, 1, 5, 2, 30, tzinfo=dt.UTC), False),
    # UTC, whatever zone the clock reading comes in
    (MaintenanceWindow(start="02:00", end="03:00"),
     dt.datetime(2026, 1, 5, 4, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), True),
])
def test_window_active(window: MaintenanceWindow, when: dt.datetime, inside: bool) -> None:
    assert window_active(window, when) is inside


def test_window_times_are_validated() -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        MaintenanceWindow(start="25:00", end="01:00")
    assert MaintenanceWindow(start=150, end="03:00").start == "02:30"  # type: ignore[arg-type]  # YAML base-60


def test_evaluating_the_same_cycle_twice_queues_once(store: Store) -> None:
    cycle = [result(400, at(0))]
    assert len(dispatcher(store).evaluate(cycle, now=at(0))) == 1
    assert dispatcher(store).evaluate(cycle, now=at(1)) == []  # a second process sees the state
    assert len(outbox(store)) == 1


def test_dedupe_key_is_unique_in_the_outbox(store: Store) -> None:
    row = {"dedupe_key": "k1", "sla_name": "lag", "kind": "violation", "severity": "warning", "action": "slack",
           "destination": "#x", "message": "m", "payload": {}, "created_at": T0}
    with store.connect(write=True) as con:
        first = queue(con, row)
        second = queue(con, row)
    assert first is not None and second is None
    assert store.scalar("SELECT count(*) FROM alert_outbox") == 1


def test_multi_sla_condition_reports_its_first_sla(store: Store) -> None:
    d = dispatcher(store, AlertRule(condition="lag > 300 or vlm_age > 600"))
    assert len(d.evaluate([result(10, at(0)), result(700, at(0), name="vlm_age", threshold=600)], now=at(0))) == 1
    [row] = outbox(store)
    assert row["sla_name"] == "lag"

    only_second = dispatcher(store, AlertRule(condition="lag3 > 300 or vlm3 > 600"))
    assert len(only_second.evaluate([result(700, at(0), name="vlm3", threshold=600)], now=at(0))) == 1
    assert outbox(store)[-1]["sla_name"] == "vlm3"  # the first SLA has not been measured yet


@pytest.mark.parametrize(("rule", "error", "match"), [
    (AlertRule(condition="lag >"), ConditionError, "end of condition"),
    (AlertRule(condition="1 > 0"), ConfigError, "names no SLA"),
    (AlertRule(condition="lag > 1", message="{nme} is late"), ConfigError, r"alerts\.0\.message.*\{nme\}"),
    (AlertRule(condition="lag > 1", message="{name.__class__}"), ConfigError, "unknown field"),
    (AlertRule(condition="lag > 1", message="{name"), ConfigError, "bad message template"),
    (AlertRule(condition="lag > 1", resolved_message="{x}"), ConfigError, "resolved_message"),
    (AlertRule(condition="lag > 1", action="webhook"), ConfigError, "needs a url"),
])
def test_bad_rules_are_refused_at_construction(store: Store, rule: AlertRule, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        dispatcher(store, rule)


def test_template_format_specs_and_missing_values(store: Store) -> None:
    d = dispatcher(store, AlertRule(condition='status(lag) == "error"', message="{name}: {value:.1f} / {threshold:.0f}"))
    d.evaluate([result(None, at(0))], now=at(0))
    assert outbox(store)[0]["message"] == "lag: n/a / 300"


def test_decide_is_pure_and_covers_the_episode() -> None:
    state = AlertState("r", "lag")
    s1, k1 = decide(state, holds=True, known=True, silenced=False, cooldown=60, now=at(0), value=1,
                    notify_resolved=True)
    assert k1 == "violation" and s1.active and s1.since == at(0) and s1.announced
    s2, k2 = decide(s1, holds=True, known=True, silenced=False, cooldown=60, now=at(30), value=2,
                    notify_resolved=True)
    assert k2 is None and s2.since == at(0) and s2.last_notified_at == at(0)
    s3, k3 = decide(s2, holds=False, known=True, silenced=False, cooldown=60, now=at(40), value=0,
                    notify_resolved=True)
    assert k3 == "resolved" and not s3.active


def test_a_long_rendered_message_is_cut_with_a_marker(store: Store) -> None:
    from fibreflow.sla.messages import MAX_MESSAGE_CHARS, TRUNCATED

    d = dispatcher(store, AlertRule(condition="lag > 300", message="{name}: {reason}"))
    d.evaluate([result(400, at(0), reason="x" * 100_000)], now=at(0))
    [row] = outbox(store)
    assert len(row["message"]) == MAX_MESSAGE_CHARS
    assert row["message"].startswith("lag: xxx") and row["message"].endswith(TRUNCATED)
    assert json.loads(row["payload"])["text"] == row["message"]
