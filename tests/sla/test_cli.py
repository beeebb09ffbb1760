"""``fibreflow sla check | watch | compliance`` through fibreflow.cli.main: exit codes and JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from fibreflow.cli import main
from fibreflow.sla.localdata import touch_image
from fibreflow.store import Store
from fibreflow.testing.slack_receiver import SlackReceiver


def make_sources(tmp_path: Path, *, image_age: float = 5, sync_age: float = 10) -> dict[str, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    touch_image(images, "DR1.jpg", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=image_age))
    db = tmp_path / "qfield.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE IF NOT EXISTS sync_log (synced_at TEXT)")
        con.execute("DELETE FROM sync_log")
        con.execute("INSERT INTO sync_log VALUES (datetime('now', ?))", [f"-{int(sync_age)} seconds"])
    return {"images": images, "db": db}


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "slas.yaml"
    path.write_text(f"""\
slas:
  images_fresh: 600
  qfield_sync_interval: 180
checks:
  images_fresh: {{type: file_age, path: "${{IMAGES_DIR}}", glob: "DR*.jpg"}}
  qfield_sync_interval: {{type: heartbeat, url: "sqlite:///${{QFIELD_DB}}", table: sync_log, column: synced_at}}
{extra}""")
    return path


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    made = make_sources(tmp_path)
    monkeypatch.setenv("IMAGES_DIR", str(made["images"]))
    monkeypatch.setenv("QFIELD_DB", str(made["db"]))
    return made


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_check_all_ok_exits_0_with_json(sources: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "sla", "check", "--config", str(write_config(tmp_path)), "--json")
    assert code == 0
    assert [c["name"] for c in doc["checks"]] == ["images_fresh", "qfield_sync_interval"]
    for check in doc["checks"]:
        assert set(check) == {"name", "status", "value", "threshold", "reason"}
        assert check["status"] == "ok" and check["reason"] is None
    assert doc["checks"][0]["threshold"] == 600 and doc["checks"][0]["value"] == pytest.approx(5, abs=3)
    assert Store(os.environ["FIBREFLOW_DB"]).scalar("SELECT count(*) FROM sla_checks") == 2


def test_check_violation_exits_1(sources: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    make_sources(tmp_path, sync_age=400)
    code, doc = run_json(capsys, "sla", "check", "--config", str(write_config(tmp_path)), "--json")
    assert code == 1
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert statuses == {"images_fresh": "ok", "qfield_sync_interval": "violation"}


def test_check_text_output_and_one_sla(sources: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sla", "check", "--config", str(write_config(tmp_path)), "--sla", "images_fresh"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("images_fresh") and "ok" in out and "qfield" not in out


def test_missing_env_var_is_a_check_error_naming_it(sources: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("QFIELD_DB")
    code, doc = run_json(capsys, "sla", "check", "--config", str(write_config(tmp_path)), "--json")
    assert code == 1
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["images_fresh"]["status"] == "ok"
    assert by_name["qfield_sync_interval"]["status"] == "error"
    assert "QFIELD_DB is not set" in by_name["qfield_sync_interval"]["reason"]


def test_bad_config_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "  lonely: {type: file_age, path: /x}\n")
    assert main(["sla", "check", "--config", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}:7:" in captured.err and "check 'lonely' has no SLA" in captured.err
    path.write_text("slas: {a: 1}\nchecks:\n  a: {type: nope}\n")
    assert main(["sla", "check", "--config", str(path)]) == 2
    assert "known: sql_freshness, sync_lag, file_age, http_latency, heartbeat, command" in capsys.readouterr().err
    assert main(["sla", "check", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_unknown_sla_option_exits_2(sources: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sla", "check", "--config", str(write_config(tmp_path)), "--sla", "nope"]) == 2
    assert "unknown SLA 'nope'" in capsys.readouterr().err


def test_default_config_path_from_settings(sources: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "fibreflow.yaml"
    settings.write_text(f"sla: {{config_path: '{write_config(tmp_path)}'}}\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(settings))
    code, doc = run_json(capsys, "sla", "check", "--json")
    assert code == 0 and len(doc["checks"]) == 2


def test_check_delivers_alerts(sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    make_sources(tmp_path, image_age=900)
    path = write_config(tmp_path, "alerts:\n  - condition: images_fresh > 600\n"
                                  "    message: 'images {value}s old (SLA {threshold}s)'\n")
    with SlackReceiver() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        code, doc = run_json(capsys, "sla", "check", "--config", str(path), "--json")
        assert code == 1
        [message] = slack.wait_for(1)
    assert (message.text or "").startswith("images 9") and "SLA 600s" in (message.text or "")


def test_watch_runs_cycles_and_stops(sources: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sla", "watch", "--config", str(write_config(tmp_path)), "--interval", "0",
                 "--cycles", "2", "--health-port", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "watching 2 SLAs" in out and "stopped after 2 cycles" in out
    store = Store(os.environ["FIBREFLOW_DB"])
    assert store.scalar("SELECT count(DISTINCT cycle_id) FROM sla_checks") == 2
    assert main(["sla", "watch", "--config", str(write_config(tmp_path)), "--cycles", "0"]) == 2


def test_compliance_json(sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    for _ in range(3):
        main(["sla", "check", "--config", config])
    make_sources(tmp_path, sync_age=400)
    main(["sla", "check", "--config", config])
    capsys.readouterr()
    code, doc = run_json(capsys, "sla", "compliance", "--config", config, "--days", "7", "--json")
    assert code == 1 and doc["days"] == 7 and doc["target"] == 0.95
    rows = {r["name"]: r for r in doc["slas"]}
    assert set(rows) == {"images_fresh", "qfield_sync_interval"}
    for key in ("checks", "ok_checks", "compliance", "target", "met", "error_budget_left", "burn_rate"):
        assert key in rows["images_fresh"]
    assert rows["images_fresh"]["compliance"] == 1.0 and rows["images_fresh"]["met"] is True
    assert rows["qfield_sync_interval"]["checks"] == 4 and rows["qfield_sync_interval"]["ok_checks"] == 3
    assert rows["qfield_sync_interval"]["compliance"] == 0.75 and rows["qfield_sync_interval"]["met"] is False
    assert main(["sla", "compliance", "--config", config]) == 1  # qfield_sync_interval misses the target
    assert "compliance over 30 days" in capsys.readouterr().out


def test_sla_without_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sla"]) == 2
    assert "check" in capsys.readouterr().out


def test_watch_process_serves_health_and_stops_on_sigterm(sources: dict[str, Path], tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "fibreflow.cli", "sla", "watch", "--config", str(write_config(tmp_path)),
         "--interval", "0.2", "--health-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"GET (http://127\.0\.0\.1:\d+/health)", first)
        assert match, first
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(match.group(1), timeout=2) as response:
                    body = json.loads(response.read())
                if body["cycles"] >= 1:
                    break
            except OSError:
                pass  # 503 before the first cycle finishes
            assert time.monotonic() < deadline, "no healthy cycle in 15 s"
            time.sleep(0.1)
        assert body["status"] == "ok" and len(body["checks"]) == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert re.search(r"stopped after \d+ cycles", out)


@pytest.mark.parametrize("extra, key, line", [
    ("monitoring:\n  retention_days: -1\n  check_interval: 0\n", "check_interval", 9),
    ("monitoring:\n  retention_days: -1\n", "retention_days", 8),
])
def test_out_of_range_monitoring_is_refused_and_the_history_kept(sources: dict[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str], extra: str,
                                                                 key: str, line: int) -> None:
    from fibreflow.sla.monitor import insert_checks

    store = Store(os.environ["FIBREFLOW_DB"])
    store.migrate()
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    insert_checks(store, [{"cycle_id": f"c{i}", "name": "images_fresh", "check_type": "file_age", "value": 5.0,
                           "threshold": 600.0, "status": "ok", "checked_at": earlier - dt.timedelta(hours=i),
                           "duration_s": 0.01} for i in range(5)])
    before = store.query_df("SELECT * FROM sla_checks ORDER BY checked_at")
    path = write_config(tmp_path, extra)
    for argv in (["sla", "check", "--config", str(path)], ["sla", "watch", "--config", str(path), "--cycles", "1"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and f"{path}:{line}: monitoring: {key}: " in err, (argv, err)
    after = store.query_df("SELECT * FROM sla_checks ORDER BY checked_at")
    assert len(after) == 5 and after.equals(before)


@pytest.mark.parametrize("argv, option", [
    (["compliance", "--days", "1e10"], "--days"), (["compliance", "--days", "nan"], "--days"),
    (["watch", "--interval", "nan", "--cycles", "1"], "--interval"),
    (["watch", "--interval", "inf", "--cycles", "1"], "--interval"),
])
def test_numeric_options_out_of_range_are_usage_errors(sources: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str], argv: list[str],
                                                       option: str) -> None:
    code = main(["sla", argv[0], "--config", str(write_config(tmp_path)), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and f"{option} must be" in err and "Traceback" not in err
