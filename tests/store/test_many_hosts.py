"""Two "hosts" (separate homes and state directories, their own local store paths) build at once
against one shared store, while an SLA watcher runs beside them: once through a store server
(``fibreflow store serve``), once through one DuckLake. The shared store holds both builds' runs,
attempts and model calls and the watcher's checks, and the twin's data functions show both."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lake_support import Lake

from fibreflow.store import Store
from fibreflow.twin.base import FilterState
from fibreflow.twin.topology import TopologyPanel

pytestmark = pytest.mark.slow  # real `fibreflow build`, `sla watch` and `store serve` processes


def _host(root: Path, name: str, config: Path) -> dict[str, str]:
    """The environment of one host: its own home, state and (unused) local store path."""
    home = root / name
    (home / "state").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBREFLOW_") or k == "FIBREFLOW_STORE_TOKEN"}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), FIBREFLOW_CONFIG=str(config),
               FIBREFLOW_DB=str(home / "local.duckdb"))
    return env


def _fibreflow(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fibreflow.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _build_and_watch(tmp_path: Path, config: Path) -> tuple[list[str], list[Path]]:
    """Two hosts build the demo feature while a third watches the SLAs; their run ids and homes."""
    from fibreflow.models.scripts import DEMO_FEATURE, write_demo_repo

    images = tmp_path / "images"
    images.mkdir()
    (images / "DR1.jpg").write_bytes(b"jpg")
    slas = tmp_path / "slas.yaml"
    slas.write_text(json.dumps({"slas": {"images_fresh": 600},
                                "checks": {"images_fresh": {"type": "file_age", "path": str(images)}}}))
    builds = []
    homes = []
    for name in ("host-a", "host-b"):
        env = _host(tmp_path, name, config)
        home = Path(env["HOME"])
        repo = write_demo_repo(home / "demo")
        features = home / "features.json"
        features.write_text(json.dumps([DEMO_FEATURE]))
        builds.append(_fibreflow(env, "build", str(features), "--repo", str(repo), "--agent", "claude", "--offline",
                                 "--agent-script", "demo_feature", "--attempts", "2", "--json", "--no-progress",
                                 cwd=home))
        homes.append(home)
    watch_env = _host(tmp_path, "host-c", config)
    watcher = _fibreflow(watch_env, "sla", "watch", "--config", str(slas), "--cycles", "3", "--interval", "0.5",
                         cwd=Path(watch_env["HOME"]))
    homes.append(Path(watch_env["HOME"]))
    run_ids = []
    for proc in builds:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        result = json.loads(out)
        assert result["passed"] is True, result
        run_ids.append(result["run_id"])
    out, err = watcher.communicate(timeout=900)
    assert watcher.returncode == 0 and "stopped after 3 cycles" in out, err[-3000:]
    return run_ids, homes


def _assert_both_builds(store: Store, run_ids: list[str], homes: list[Path]) -> None:
    assert len(set(run_ids)) == 2
    runs = store.query_df("SELECT run_id, status FROM runs ORDER BY run_id")
    assert sorted(runs.run_id) == sorted(run_ids) and set(runs.status) == {"passed"}
    for rid in run_ids:
        assert store.scalar("SELECT count(*) FROM attempts WHERE run_id = ?", [rid]) == 2
        assert store.scalar("SELECT count(*) FROM llm_calls WHERE run_id = ?", [rid]) > 0
        assert store.scalar("SELECT count(*) FROM sandbox_sessions WHERE run_id = ?", [rid]) == 2
    assert store.scalar("SELECT count(*) FROM sla_checks WHERE name = 'images_fresh'") == 3
    # the twin's data: both runs, each one's attempts when filtered to it
    panel = TopologyPanel(store)
    assert panel.load(FilterState(days=0))["runs"] == 2
    for rid in run_ids:
        data = panel.load(FilterState(days=0, run_id=rid))
        assert data["runs"] == 1 and int(data["attempts"]["attempts"].sum()) == 2
    # no host fell back to a store of its own
    assert not [p for home in homes for p in home.rglob("*.duckdb")]


def test_two_hosts_and_a_watcher_share_one_lake(lake: Lake, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = lake.config(tmp_path / "fibreflow.yaml")
    run_ids, homes = _build_and_watch(tmp_path, config)
    _assert_both_builds(lake.store(tmp_path, monkeypatch), run_ids, homes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_hosts_and_a_watcher_share_one_store_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "server" / "fibreflow.duckdb"
    db.parent.mkdir()
    port = _free_port()
    token = "many-hosts-" + os.urandom(8).hex()
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("FIBREFLOW_")}
    server_env.update(FIBREFLOW_DB=str(db), FIBREFLOW_STORE_TOKEN=token)
    server = subprocess.Popen([sys.executable, "-m", "fibreflow.cli", "store", "serve", "--port", str(port)],
                              env=server_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, server.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the store server did not listen"
            time.sleep(0.2)
        config = tmp_path / "fibreflow.yaml"
        config.write_text(f"store:\n  url: 'quack://127.0.0.1:{port}'\n")
        monkeypatch.setenv("FIBREFLOW_STORE_TOKEN", token)
        run_ids, homes = _build_and_watch(tmp_path, config)
        monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
        _assert_both_builds(Store(), run_ids, homes)
    finally:
        server.terminate()
        server.communicate(timeout=60)
