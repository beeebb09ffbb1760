"""``fibreflow bench sla --json`` runs end to end against its local sources (small settings)."""

from __future__ import annotations

import json

import pytest

from fibreflow.cli import main


def test_bench_sla_reports_the_issue_keys(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "sla", "--json", "--pg", pg_dsn, "--cycles", "2", "--alerts", "1",
                 "--hang-timeout", "0.5", "--compliance-runs", "1"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["slas"] == 12 and doc["compliance_rows"] == 518_400 and doc["alerts_timed"] == 2
    # the figures' goals are the benchmark's to judge; here: they were measured
    assert doc["cycle_s"] > 0 and doc["alert_latency_p95_s"] >= 0 and doc["compliance_query_ms"] > 0
    assert 0.5 <= doc["hang_cycle_s"] < 0.5 * 3 + 5  # bounded by the hanging check's 0.5 s timeout
