"""The E2B backend: the real ``e2b`` SDK against a real ``fibreflow sandbox serve`` process, faults
included, and the SDK calls the backend makes checked against the installed SDK."""

from __future__ import annotations

import datetime as dt
import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b_support import backend_for, e2b_server, sdk_opts

from fibreflow.config import load_settings
from fibreflow.errors import ConfigError, SandboxError, SandboxUnavailable
from fibreflow.sandbox import e2b as backend_module
from fibreflow.sandbox.base import Sandbox, SandboxProfile
from fibreflow.sandbox.e2b import E2BBackend
from fibreflow.sandbox.e2b_launch import ServerProcess

e2b = pytest.importorskip("e2b")
from e2b.connection_config import ApiParams  # noqa: E402
from e2b.sandbox_sync.commands.command import Commands  # noqa: E402
from e2b.sandbox_sync.filesystem.filesystem import Filesystem  # noqa: E402

LIVE_KEY = os.environ.get("E2B_API_KEY")  # read at import: the autouse fixture hides secrets from tests
PROFILE = SandboxProfile("quick", wall_timeout_s=30)
pytestmark = pytest.mark.slow


# -- the SDK calls the backend makes exist in the installed SDK ---------------------------------


def _params(fn: object) -> set[str]:
    return set(inspect.signature(fn).parameters)


@pytest.mark.parametrize("fn, used", [
    (e2b.Sandbox.create, {"template", "timeout", "metadata", "envs", "allow_internet_access"}),
    (e2b.Sandbox.list, {"query"}),
    (e2b.Sandbox._cls_kill, {"sandbox_id"}),
    (Commands.run, {"cmd", "envs", "cwd", "timeout"}),
    (Filesystem.read, {"path"}),
    (Filesystem.write, {"path", "data"}),
    (Filesystem.write_files, {"files"}),
], ids=lambda f: getattr(f, "__qualname__", "used"))
def test_the_sdk_takes_the_arguments_the_backend_passes(fn: object, used: set[str]) -> None:
    assert used <= _params(fn)


def test_the_sdk_has_the_options_records_and_errors_the_backend_relies_on() -> None:
    assert {"api_key", "api_url", "sandbox_url", "domain"} <= set(ApiParams.__annotations__)
    assert "metadata" in _params(e2b.SandboxQuery)
    for name in ("get_info", "kill"):  # an instance method that is also a class method taking an id
        assert type(inspect.getattr_static(e2b.Sandbox, name)).__name__ == "class_method_variant"
    assert {"cpu_count", "memory_mb", "metadata", "sandbox_id"} <= set(e2b.SandboxInfo.__dataclass_fields__)
    assert {"exit_code", "stdout", "stderr"} <= set(e2b.CommandExitException.__dataclass_fields__)
    matched = [*backend_module._GONE, *backend_module._RETRYABLE, "CommandExitException", "TimeoutException",
               "AuthenticationException", "FileNotFoundException"]
    assert [name for name in matched if not hasattr(e2b, name)] == []


# -- the backend against the server --------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with e2b_server(state=tmp_path_factory.getbasetemp() / "state") as s:
        yield s


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "pkg").mkdir(parents=True)
    (r / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (r / ".gitignore").write_text("*.log\n")
    (r / "test_mod.py").write_text("from pkg.mod import VALUE\n\ndef test_value():\n    assert VALUE == 2\n")
    git = ["git", "-C", str(r), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(r)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (r / "notes.txt").write_text("untracked but not ignored\n")
    (r / "debug.log").write_text("ignored\n")
    (r / ".venv" / "lib").mkdir(parents=True)
    (r / ".venv" / "lib" / "big.py").write_text("# never uploaded\n")
    return r


def _running(server: ServerProcess) -> set[str]:
    pager = e2b.Sandbox.list(**sdk_opts(server))
    found: set[str] = set()
    while pager.has_next:
        found |= {i.sandbox_id for i in pager.next_items()}
    return found


def test_upload_is_one_archive_and_diff_is_git(server: ServerProcess, repo: Path) -> None:
    before = (repo / "pkg" / "mod.py").read_text()
    with backend_for(server).create(repo, PROFILE, labels={"run_id": "r1", "feature_id": "f1"}) as box:
        assert isinstance(box, Sandbox)
        assert box.id in _running(server)
        listing = box.run("find . -path ./.git -prune -o -type f -print | sort").stdout.split()
        assert listing == ["./.gitignore", "./notes.txt", "./pkg/mod.py", "./test_mod.py"]
        assert box.diff() == ""
        box.write_files({"pkg/mod.py": "VALUE = 2\n", "pkg/new.py": b"NEW = True\n"})
        assert box.read_file("pkg/new.py") == "NEW = True\n"
        result = box.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mod.py"])
        assert result.exit_code == 0, result.stdout + result.stderr
        patch = box.diff()
        assert "-VALUE = 1\n+VALUE = 2" in patch and "+++ b/pkg/new.py" in patch
        assert "__pycache__" not in patch
        with pytest.raises(FileNotFoundError):
            box.read_file("missing.txt")
        with pytest.raises(SandboxError, match="outside"):
            box.write_files({"../escape.txt": "x"})
    assert (repo / "pkg" / "mod.py").read_text() == before and not (repo / "pkg" / "new.py").exists()
    assert box.id not in _running(server) and box.close_error is None


def test_the_store_and_the_state_directory_are_never_uploaded(server: ServerProcess, repo: Path) -> None:
    # the default layout: the store under the repository (untracked, not ignored), the state too
    (repo / "data").mkdir()
    for name in ("fibreflow.duckdb", "fibreflow.duckdb.wal", "fibreflow.duckdb.lock", "pricing.yaml"):
        (repo / "data" / name).write_text("STORE" if "duckdb" in name else "price: 1\n")
    (repo / ".state" / "fibreflow" / "sandboxes" / "x").mkdir(parents=True)
    (repo / ".state" / "fibreflow" / "sandboxes" / "x" / "secret.txt").write_text("SECRET")
    settings = load_settings().model_copy(update={"db_path": repo / "data" / "fibreflow.duckdb",
                                                  "state_dir": repo / ".state" / "fibreflow"})
    with backend_for(server, settings=settings).create(repo, PROFILE) as box:
        listing = box.run("find . -path ./.git -prune -o -type f -print | sort").stdout.split()
    assert "./data/pricing.yaml" in listing
    assert not [f for f in listing if "duckdb" in f or "state" in f], listing


def test_commands_report_exit_codes_env_and_timeouts(server: ServerProcess, repo: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_API_KEY", "secret-value")
    with backend_for(server).create(repo, PROFILE) as box:
        failed = box.run("echo out; echo err >&2; exit 3", env={"GREETING": "hi"})
        assert (failed.exit_code, failed.stdout, failed.stderr, failed.killed) == (3, "out\n", "err\n", False)
        assert box.run("echo $GREETING", env={"GREETING": "hi"}).stdout == "hi\n"
        assert "secret-value" not in box.run("env").stdout
        assert box.run("pwd; echo $HOME").stdout == "/home/user/repo\n/home/user\n"
        slow = box.run("sleep 20", timeout=1)
        assert slow.killed and slow.killed_reason == "timeout" and slow.exit_code == 124
        assert box.killed_reason == "timeout"
    passthrough = SandboxProfile("networked", env_passthrough=("E2B_API_KEY",), network=True)
    with backend_for(server).create(repo, passthrough) as box:
        assert "E2B_API_KEY=secret-value" in box.run("env").stdout
        assert box._sdk.get_info().allow_internet_access is True


def test_profile_limits_hold_in_the_sandbox(server: ServerProcess, repo: Path) -> None:
    tight = SandboxProfile("tight", wall_timeout_s=30, cpu_time_s=1, max_file_size_mb=1)
    with backend_for(server).create(repo, tight) as box:
        # inside the served sandbox, not on the host: the workspace is bubblewrap's, not the repo
        assert box.run("test -d /workspace && test ! -e " + str(repo)).exit_code == 0
        spin = box.run("while :; do :; done")
        assert (spin.killed, spin.killed_reason) == (True, "cpu"), spin
        big = box.run("head -c 3000000 /dev/zero > big.bin")
        assert (big.killed, big.killed_reason) == (True, "file_size")
        assert box.killed_reason == "file_size"


def test_metadata_tags_and_reaping_finished_runs(server: ServerProcess, repo: Path, store) -> None:
    now = dt.datetime.now(dt.UTC)
    store.insert_rows("runs", [{"run_id": "done", "status": "passed", "started_at": now},
                               {"run_id": "live", "status": "running", "started_at": now}])
    backend = backend_for(server)
    boxes = {run: backend.create(repo, PROFILE, labels={"run_id": run, "feature_id": "feat", "attempt_id": "a1"})
             for run in ("done", "live", "someone-elses")}
    tags = {i.sandbox_id: i.metadata for i in backend.list_sandboxes()}
    assert tags[boxes["done"].id] == {"app": "fibreflow", "fibreflow_run": "done", "feature": "feat",
                                      "attempt": "a1"}
    assert backend.reap_finished_runs(store) == [boxes["done"].id]
    mine = {b.id for b in boxes.values()}
    assert _running(server) & mine == {boxes["live"].id, boxes["someone-elses"].id}
    boxes["done"].close()  # already gone: closing must not fail
    assert boxes["done"].close_error is None
    store.execute("UPDATE runs SET status = 'failed' WHERE run_id = 'live'")
    assert backend.reap_finished_runs(store) == [boxes["live"].id]
    boxes["someone-elses"].close()
    assert _running(server) & mine == set()


def test_listing_follows_pages(server: ServerProcess, repo: Path) -> None:
    backend = backend_for(server)
    made = [backend.create(repo, PROFILE, labels={"run_id": "paged"}) for _ in range(5)]
    query = e2b.SandboxQuery(metadata={"fibreflow_run": "paged"})
    pager = e2b.Sandbox.list(query=query, limit=2, **sdk_opts(server))
    pages = []
    while pager.has_next:
        pages.append([i.sandbox_id for i in pager.next_items()])
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(sum(pages, [])) == sorted(b.id for b in made)
    assert {b.id for b in made} <= {i.sandbox_id for i in backend.list_sandboxes()}
    for box in made:
        box.close()


def test_creations_are_spaced_to_the_configured_rate(server: ServerProcess, repo: Path) -> None:
    backend = backend_for(server, creates_per_second=2, max_tries=1)
    started = time.monotonic()
    made = [backend.create(repo, PROFILE) for _ in range(4)]
    assert time.monotonic() - started >= 1.4  # a lower bound: 0, 0.5, 1.0, 1.5 s, whatever the machine's speed
    for box in made:
        box.close()


def test_vanished_sandbox_fails_with_a_clear_reason(server: ServerProcess, repo: Path) -> None:
    box = backend_for(server).create(repo, PROFILE)
    assert e2b.Sandbox.kill(box.id, **sdk_opts(server)) is True
    with pytest.raises(SandboxError, match="gone"):
        box.run("true")
    with pytest.raises(SandboxError, match="gone"):
        box.write_files({"a.txt": "x"})
    box.close()  # the server no longer knows it: still closes quietly
    assert box.ended_at is not None and box.close_error is None


def test_a_sandbox_killed_mid_command_fails_the_command(server: ServerProcess, repo: Path) -> None:
    box = backend_for(server).create(repo, PROFILE)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(box.run("echo started; sleep 25"))
        except SandboxError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while not box._sdk.commands.list() and worker.is_alive():
        time.sleep(0.05)
    assert e2b.Sandbox.kill(box.id, **sdk_opts(server)) is True
    worker.join(60)
    assert not worker.is_alive()
    assert isinstance(outcome[0], SandboxError) and "gone" in str(outcome[0]), outcome
    box.close()


def test_an_expired_timeout_kills_the_sandbox(server: ServerProcess, repo: Path) -> None:
    box = backend_for(server).create(repo, PROFILE)
    info = box._sdk.get_info()
    assert info.end_at - info.started_at >= dt.timedelta(seconds=300)  # the backend's lifetime, not ours
    e2b.Sandbox.set_timeout(box.id, 1, **sdk_opts(server))
    for _ in range(200):  # the server's reaper looks twice a second
        if not box._sdk.is_running():
            break
        time.sleep(0.1)
    assert not box._sdk.is_running()
    assert box.id not in _running(server)
    with pytest.raises(SandboxError, match="gone"):
        box.run("true")
    box.close()


def test_an_unknown_sandbox_id_is_not_found(server: ServerProcess) -> None:
    backend = backend_for(server)
    assert backend.kill("i0000unknown") is False
    with pytest.raises(e2b.SandboxNotFoundException):
        e2b.Sandbox.get_info("i0000unknown", **sdk_opts(server))
    with pytest.raises(e2b.SandboxNotFoundException):
        e2b.Sandbox.set_timeout("i0000unknown", 30, **sdk_opts(server))


def test_rate_limits_on_create_are_retried_then_reported(tmp_path: Path, repo: Path) -> None:
    # 13 refusals: the SDK tries 4 times per call (itself retrying 429s), this backend 2 calls first
    with e2b_server("--fail-creates", "13") as faulty:
        with pytest.raises(SandboxError, match="rate limit") as refused:
            backend_for(faulty, max_tries=2).create(repo, PROFILE)
        assert "kept refusing to create" in str(refused.value)
        box = backend_for(faulty).create(repo, PROFILE)  # 5 more refusals: the second call gets through
        assert box.run("echo ok").stdout == "ok\n"
        box.close()
        assert _running(faulty) == set()


def test_cost_follows_lifetime_and_rates(server: ServerProcess, repo: Path) -> None:
    box = backend_for(server).create(repo, PROFILE)
    info = box._sdk.get_info()
    assert (box.vcpus, box.memory_mb) == (info.cpu_count, info.memory_mb)
    box.close()
    rates = load_settings().sandbox
    expected = box.lifetime_s * (box.vcpus * rates.e2b_vcpu_second_usd + box.memory_mb / 1024 * rates.e2b_gib_second_usd)
    assert box.estimated_cost_usd() == pytest.approx(expected)
    assert box.estimated_cost_usd() == box.estimated_cost_usd()  # frozen once closed
    assert 0 < box.estimated_cost_usd() < 0.01


def test_settings_point_the_backend_at_your_own_hosts(server: ServerProcess, repo: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base = load_settings()
    settings = base.model_copy(update={"sandbox": base.sandbox.model_copy(update={
        "e2b_api_url": server.url, "e2b_api_key_env": "TEAM_SANDBOX_KEY"})})
    with pytest.raises(SandboxUnavailable, match="TEAM_SANDBOX_KEY"):
        E2BBackend(settings=settings)
    monkeypatch.setenv("TEAM_SANDBOX_KEY", "not-the-key")
    with pytest.raises(SandboxUnavailable, match="rejected the API key in TEAM_SANDBOX_KEY"):
        E2BBackend(settings=settings, creates_per_second=0).create(repo, PROFILE)
    monkeypatch.setenv("TEAM_SANDBOX_KEY", server.api_key)
    with E2BBackend(settings=settings, creates_per_second=0).create(repo, PROFILE) as box:
        assert box.run("cat pkg/mod.py").stdout == "VALUE = 1\n"


def test_a_bad_key_variable_name_in_the_config_names_file_and_field(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fibreflow.yaml"
    config.write_text("sandbox:\n  backend: e2b\n  e2b_api_key_env: 'my key'\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert str(config) in str(bad.value) and "e2b_api_key_env" in str(bad.value)


def test_missing_key_or_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SandboxUnavailable, match="E2B_API_KEY"):
        E2BBackend()
    monkeypatch.setitem(sys.modules, "e2b", None)
    with pytest.raises(SandboxUnavailable, match=r"pip install fibreflow\[e2b\]"):
        E2BBackend(api_key="k")


def test_rejected_key_names_the_variable(server: ServerProcess, repo: Path) -> None:
    backend = E2BBackend(api_key="wrong", api_url=server.url, creates_per_second=0)
    with pytest.raises(SandboxUnavailable, match="E2B_API_KEY"):
        backend.create(repo, PROFILE)


@pytest.mark.live
@pytest.mark.skipif(not LIVE_KEY, reason="needs E2B_API_KEY")
def test_live_e2b_round_trip(repo: Path, store) -> None:
    backend = E2BBackend(api_key=LIVE_KEY, run_id="live-test")
    with backend.create(repo, PROFILE, labels={"run_id": "live-test", "feature_id": "live"}) as box:
        assert box.run("cat pkg/mod.py").stdout == "VALUE = 1\n"
        box.write_files({"pkg/mod.py": "VALUE = 2\n"})
        assert "+VALUE = 2" in box.diff()
    assert box.id not in {i.sandbox_id for i in backend.list_sandboxes()}
