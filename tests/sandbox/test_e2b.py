"""The E2B backend against the shipped fake, and the fake against the real SDK's signatures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fibreflow.config import load_settings
from fibreflow.errors import SandboxError, SandboxUnavailable
from fibreflow.sandbox.base import Sandbox, SandboxProfile
from fibreflow.sandbox.e2b import E2BBackend
from fibreflow.testing import e2b_fake as fake

e2b = pytest.importorskip("e2b")
from e2b.sandbox_sync.commands.command import Commands  # noqa: E402
from e2b.sandbox_sync.filesystem.filesystem import Filesystem  # noqa: E402
from e2b.sandbox_sync.paginator import SandboxPaginator  # noqa: E402

LIVE_KEY = os.environ.get("E2B_API_KEY")  # read at import: the autouse fixture hides secrets from tests
KEY = "e2b_test_key"
PROFILE = SandboxProfile("quick", wall_timeout_s=30)


def _shape(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("real, double", [
    (e2b.Sandbox.create, fake.Sandbox.create),
    (e2b.Sandbox.list, fake.Sandbox.list),
    (e2b.Sandbox.kill, fake.Sandbox.kill),
    (e2b.Sandbox._cls_kill, fake.Sandbox._cls_kill),
    (e2b.Sandbox.get_info, fake.Sandbox.get_info),
    (e2b.Sandbox.is_running, fake.Sandbox.is_running),
    (Commands.run, fake.Commands.run),
    (Filesystem.read, fake.Filesystem.read),
    (Filesystem.write, fake.Filesystem.write),
    (Filesystem.write_files, fake.Filesystem.write_files),
    (Filesystem.exists, fake.Filesystem.exists),
    (SandboxPaginator.next_items, fake.SandboxPaginator.next_items),
], ids=lambda f: getattr(f, "__qualname__", str(f)))
def test_fake_signatures_match_the_sdk(real: object, double: object) -> None:
    assert _shape(double) == _shape(real)


def test_fake_exceptions_and_records_match_the_sdk() -> None:
    for name in ("SandboxException", "TimeoutException", "NotFoundException", "FileNotFoundException",
                 "SandboxNotFoundException", "SandboxNotRunningException", "RateLimitException",
                 "AuthenticationException", "InvalidArgumentException", "CommandExitException"):
        real_mro = [c.__name__ for c in getattr(e2b, name).__mro__]
        fake_mro = [c.__name__ for c in getattr(fake, name).__mro__]
        assert [n for n in real_mro if n in fake_mro] == fake_mro, name
    assert fake.RateLimitException("x").status_code == e2b.RateLimitException("x").status_code == 429
    for name in ("SandboxQuery", "CommandResult", "CommandExitException"):
        assert [f.name for f in dataclasses.fields(getattr(fake, name))] == \
            [f.name for f in dataclasses.fields(getattr(e2b, name))], name
    real_info = [f.name for f in dataclasses.fields(e2b.SandboxInfo)]
    assert [f.name for f in dataclasses.fields(fake.SandboxInfo)] == real_info[:12]
    assert {s.value for s in fake.SandboxState} == {s.value for s in e2b.SandboxState}
    for name in ("kill", "get_info"):  # callable on an instance and on the class with an id
        assert type(inspect.getattr_static(fake.Sandbox, name)).__name__ == \
            type(inspect.getattr_static(e2b.Sandbox, name)).__name__ == "class_method_variant"


# -- the adapter against the fake ------------------------------------------------------------


@pytest.fixture
def cloud(tmp_path: Path):
    c = fake.FakeCloud(tmp_path / "cloud", api_key=KEY)
    yield c
    c.close()


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


def _backend(cloud: fake.FakeCloud, **kw: object) -> E2BBackend:
    return E2BBackend(api_key=KEY, client=cloud, backoff_s=0.01, creates_per_second=0, **kw)


def test_upload_is_one_archive_and_diff_is_git(cloud: fake.FakeCloud, repo: Path) -> None:
    before = (repo / "pkg" / "mod.py").read_text()
    with _backend(cloud).create(repo, PROFILE, labels={"run_id": "r1", "feature_id": "f1"}) as box:
        assert isinstance(box, Sandbox)
        assert [c for c in cloud.calls if c[0] == "write"] == [("write", box.id)]
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
    assert cloud.running() == []


def test_the_store_and_the_state_directory_are_never_uploaded(cloud: fake.FakeCloud, repo: Path) -> None:
    # the default layout: the store under the repository (untracked, not ignored), the state too
    (repo / "data").mkdir()
    for name in ("fibreflow.duckdb", "fibreflow.duckdb.wal", "fibreflow.duckdb.lock", "pricing.yaml"):
        (repo / "data" / name).write_text("STORE" if "duckdb" in name else "price: 1\n")
    (repo / ".state" / "fibreflow" / "sandboxes" / "x").mkdir(parents=True)
    (repo / ".state" / "fibreflow" / "sandboxes" / "x" / "secret.txt").write_text("SECRET")
    settings = load_settings().model_copy(update={"db_path": repo / "data" / "fibreflow.duckdb",
                                                  "state_dir": repo / ".state" / "fibreflow"})
    with _backend(cloud, settings=settings).create(repo, PROFILE) as box:
        listing = box.run("find . -path ./.git -prune -o -type f -print | sort").stdout.split()
    assert "./data/pricing.yaml" in listing
    assert not [f for f in listing if "duckdb" in f or "state" in f], listing


def test_commands_report_exit_codes_env_and_timeouts(cloud: fake.FakeCloud, repo: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_API_KEY", "secret-value")
    with _backend(cloud).create(repo, PROFILE) as box:
        failed = box.run("echo out; echo err >&2; exit 3", env={"GREETING": "hi"})
        assert (failed.exit_code, failed.stdout, failed.stderr, failed.killed) == (3, "out\n", "err\n", False)
        assert box.run("echo $GREETING", env={"GREETING": "hi"}).stdout == "hi\n"
        assert "secret-value" not in box.run("env").stdout
        timeout = 1
        slow = box.run("sleep 20", timeout=timeout)
        assert slow.killed and slow.killed_reason == "timeout" and slow.duration_s < timeout * 3 + 5
        cloud.fail_next("run", fake.TimeoutException("context deadline exceeded"))
        assert box.run("true").killed_reason == "timeout"
    passthrough = SandboxProfile("networked", env_passthrough=("E2B_API_KEY",), network=True)
    with _backend(cloud).create(repo, passthrough) as box:
        assert "E2B_API_KEY=secret-value" in box.run("env").stdout
        assert cloud.boxes[box.id].allow_internet_access is True


def test_profile_limits_hold_in_the_vm(cloud: fake.FakeCloud, repo: Path) -> None:
    tight = SandboxProfile("tight", wall_timeout_s=30, cpu_time_s=1, max_file_size_mb=1)
    with _backend(cloud).create(repo, tight) as box:
        spin = box.run("while :; do :; done")
        assert (spin.killed, spin.killed_reason) == (True, "cpu"), spin
        big = box.run("head -c 3000000 /dev/zero > big.bin")
        assert (big.killed, big.killed_reason) == (True, "file_size")
        assert box.killed_reason == "file_size"


def test_metadata_tags_and_reaping_finished_runs(cloud: fake.FakeCloud, repo: Path, store) -> None:
    now = dt.datetime.now(dt.UTC)
    store.insert_rows("runs", [{"run_id": "done", "status": "passed", "started_at": now},
                               {"run_id": "live", "status": "running", "started_at": now}])
    backend = _backend(cloud)
    boxes = {run: backend.create(repo, PROFILE, labels={"run_id": run, "feature_id": "feat", "attempt_id": "a1"})
             for run in ("done", "live", "someone-elses")}
    tags = {i.sandbox_id: i.metadata for i in backend.list_sandboxes()}
    assert tags[boxes["done"].id] == {"app": "fibreflow", "fibreflow_run": "done", "feature": "feat",
                                      "attempt": "a1"}
    assert backend.reap_finished_runs(store) == [boxes["done"].id]
    assert cloud.running() == sorted([boxes["live"].id, boxes["someone-elses"].id])
    boxes["done"].close()  # already gone at E2B: closing must not fail
    store.execute("UPDATE runs SET status = 'failed' WHERE run_id = 'live'")
    assert backend.reap_finished_runs(store) == [boxes["live"].id]
    boxes["someone-elses"].close()
    assert cloud.running() == []


def test_listing_follows_pages(tmp_path: Path, repo: Path) -> None:
    cloud = fake.FakeCloud(tmp_path / "paged", api_key=KEY, page_size=2)
    backend = _backend(cloud)
    made = [backend.create(repo, PROFILE) for _ in range(5)]
    assert sorted(i.sandbox_id for i in backend.list_sandboxes()) == sorted(b.id for b in made)
    assert sum(1 for c in cloud.calls if c[0] == "list") == 3
    cloud.close()


def test_rate_limits_are_retried_with_backoff(cloud: fake.FakeCloud, repo: Path) -> None:
    cloud.fail_next("create", fake.RateLimitException("429: Rate limit exceeded"), times=2)
    box = _backend(cloud).create(repo, PROFILE)
    assert [c[0] for c in cloud.calls].count("create") == 3
    box.close()
    cloud.fail_next("create", fake.RateLimitException("429: Rate limit exceeded"), times=5)
    with pytest.raises(SandboxError, match="rate limit"):
        _backend(cloud, max_tries=3).create(repo, PROFILE)


def test_creation_bursts_stay_under_the_service_limit(tmp_path: Path, repo: Path) -> None:
    cloud = fake.FakeCloud(tmp_path / "strict", api_key=KEY, creates_per_second=2)
    backend = E2BBackend(api_key=KEY, client=cloud, backoff_s=0.05, creates_per_second=100, max_tries=8)
    made: list = []
    threads = [threading.Thread(target=lambda: made.append(backend.create(repo, PROFILE))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 5 and len(cloud.running()) == 5  # some 429s, every creation retried to success
    assert [c[0] for c in cloud.calls].count("create") > 5
    for box in made:
        box.close()
    cloud.close()


def test_creations_are_spaced_to_the_configured_rate(tmp_path: Path, repo: Path) -> None:
    cloud = fake.FakeCloud(tmp_path / "paced", api_key=KEY, creates_per_second=3)
    backend = E2BBackend(api_key=KEY, client=cloud, creates_per_second=2, max_tries=1)
    started = time.monotonic()
    made = [backend.create(repo, PROFILE) for _ in range(4)]
    assert time.monotonic() - started >= 1.4  # 0, 0.5, 1.0, 1.5 s: never a 429, so no retry was needed
    assert [c[0] for c in cloud.calls].count("create") == 4
    for box in made:
        box.close()
    cloud.close()


def test_vanished_sandbox_fails_with_a_clear_reason(cloud: fake.FakeCloud, repo: Path) -> None:
    box = _backend(cloud).create(repo, PROFILE)
    cloud.expire(box.id)
    with pytest.raises(SandboxError, match="gone"):
        box.run("true")
    with pytest.raises(SandboxError, match="gone"):
        box.write_files({"a.txt": "x"})
    box.close()  # E2B no longer knows it: still closes quietly
    assert box.ended_at is not None


def test_cost_follows_lifetime_and_rates(cloud: fake.FakeCloud, repo: Path) -> None:
    box = _backend(cloud).create(repo, PROFILE)
    box.close()
    rates = load_settings().sandbox
    expected = box.lifetime_s * (2 * rates.e2b_vcpu_second_usd + 0.5 * rates.e2b_gib_second_usd)
    assert box.estimated_cost_usd() == pytest.approx(expected)
    assert box.estimated_cost_usd() == box.estimated_cost_usd()  # frozen once closed
    assert 0 < box.estimated_cost_usd() < 0.01


def test_missing_key_or_package_is_a_clear_error(cloud: fake.FakeCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SandboxUnavailable, match="E2B_API_KEY"):
        E2BBackend(client=cloud)
    monkeypatch.setitem(sys.modules, "e2b", None)
    with pytest.raises(SandboxUnavailable, match=r"pip install fibreflow\[e2b\]"):
        E2BBackend(api_key=KEY)


def test_rejected_key_names_the_variable(cloud: fake.FakeCloud, repo: Path) -> None:
    backend = E2BBackend(api_key="wrong", client=cloud, creates_per_second=0)
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
