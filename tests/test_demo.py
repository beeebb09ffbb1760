from __future__ import annotations

from pathlib import Path

import pytest

from fibreflow.demo import run_sla_demo
from fibreflow.store import Store


@pytest.mark.slow
def test_sla_demo_violates_recovers_and_alerts_twice_over(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    lines: list[str] = []
    first = run_sla_demo(workdir=tmp_path / "w", store_path=db, out=lines.append)
    statuses = [{r.name: r.status for r in cycle} for cycle in first.cycles]
    assert statuses[0]["neon_to_convex_max_delay"] == "ok"
    assert statuses[1]["neon_to_convex_max_delay"] == "violation"
    assert all(s == "ok" for s in statuses[2].values())
    assert len(first.alerts) == 2
    assert "delayed" in first.alerts[0] and "resolved" in first.alerts[1]
    assert any("LOCAL DEMO DATA LAYER" in line for line in lines)

    second = run_sla_demo(workdir=tmp_path / "w", store_path=db, out=lines.append)
    assert len(second.alerts) == 2
    store = Store(db)
    assert store.scalar("SELECT count(DISTINCT cycle_id) FROM sla_checks") == 6
    assert store.scalar("SELECT count(*) FROM alert_outbox WHERE status = 'delivered'") == 4
    assert store.scalar("SELECT count(*) FROM alert_outbox WHERE status <> 'delivered'") == 0
