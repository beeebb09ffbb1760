"""Stopping a build: SIGINT and SIGTERM end its sandboxes and mark it cancelled, a second signal exits
at once, and a build killed outright is marked crashed by the next command. Real `fibreflow build`
processes, real signals, real bwrap sandboxes running `sleep 1000`, a real DuckDB file."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from repo_support import make_repo

from fibreflow.models.scripts import write_demo_repo
from fibreflow.sandbox.state import processes_with_argument
from fibreflow.store import Store

pytestmark = [pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
              pytest.mark.slow]  # real `fibreflow build` subprocesses

FIX = "printf 'def add(a, b):\\n    return a + b\\n' > calc.py"
GOAL = "Fix calc.add: it must return the sum of its arguments."


def sleeping(marker: str) -> list[int]:
    """The sandboxed ``exec -a MARKER sleep 1000`` commands: processes whose argv[0] is ``marker``."""
    return processes_with_argument(marker, argv0=True)


def any_with(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` anywhere (bwrap, its shell, the sleep)."""
    return processes_with_argument(marker)


class Build:
    """``python -m fibreflow.cli ARGS`` in the background, its stderr read line by line."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.out_path = cwd / f"stdout-{uuid.uuid4().hex[:8]}.txt"
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "fibreflow.cli", *args], cwd=cwd,
                                         env=os.environ.copy(), stdout=out, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def wait_for_sleepers(self, marker: str, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(sleeping(marker)) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"{count} sandboxed sleeps did not start (exit {self.proc.returncode}): "
                            f"{''.join(self.err)[-3000:]}")
            time.sleep(0.05)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.05):
                    return True
            except queue.Empty:
                continue
        return False

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Exit code, stdout and stderr; a process still running after ``timeout`` is killed and fails."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the build did not exit within {timeout}s of the signal: {''.join(self.err)[-3000:]}")
        self._reader.join(5)
        return self.proc.returncode, self.out_path.read_text(), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


def gone(marker: str, timeout: float = 5.0) -> list[int]:
    """The processes still mentioning ``marker`` after up to ``timeout`` s (the kernel reaps killed ones)."""
    deadline = time.monotonic() + timeout
    while any_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return any_with(marker)


@pytest.fixture
def db(tmp_path: Path) -> Store:
    return Store(tmp_path / "fibreflow.duckdb", lock_timeout_s=30)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"a.txt": "x\n"})


def plain_build(tmp_path: Path, repo: Path, marker: str, run_id: str, attempts: int = 3) -> Build:
    return Build("build", "sleep on it", "--repo", str(repo), "--attempts", str(attempts), "--agent", "command",
                 "--agent-command", f"exec -a {marker} sleep 1000", "--run-id", run_id, "--no-progress",
                 cwd=tmp_path)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_sandboxes_and_cancels_the_run(tmp_path: Path, repo: Path, db: Store,
                                                         signum: int, code: int) -> None:
    marker = f"ffsleep{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    build = plain_build(tmp_path, repo, marker, "run-stop")
    build.wait_for_sleepers(marker, 3)
    startup = time.monotonic() - started  # the baseline: starting the build and its three sandboxes
    sent = time.monotonic()
    build.proc.send_signal(signum)
    exit_code, out, err = build.finish(timeout=120)
    took = time.monotonic() - sent

    assert exit_code == code, err
    assert "Traceback" not in err
    # stopping costs about what starting did, not the 1000 s sleeps: they were ended
    assert took < startup * 3 + 5, f"exited {took:.1f}s after the signal (startup took {startup:.1f}s)"
    assert gone(marker) == []
    assert "cancelled" in out and "kept in the store: 0 finished attempt(s)" in err
    assert db.query_df("SELECT status FROM runs WHERE run_id = 'run-stop'").status.tolist() == ["cancelled"]
    assert db.query_df("SELECT status FROM features WHERE run_id = 'run-stop'").status.tolist() == ["cancelled"]
    attempts = db.query_df("SELECT killed_reason FROM attempts WHERE run_id = 'run-stop'")
    assert attempts.killed_reason.tolist() == ["cancelled"] * 3


def test_a_second_sigint_exits_at_once_without_a_traceback(tmp_path: Path, repo: Path, db: Store) -> None:
    marker = f"ffsleep{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    build = plain_build(tmp_path, repo, marker, "run-twice")
    build.wait_for_sleepers(marker, 3)
    startup = time.monotonic() - started  # the baseline: starting the build and its three sandboxes
    build.proc.send_signal(signal.SIGINT)
    if not build.wait_for_line("stopping", timeout=30):  # the first one was taken: it said so
        build.kill()
        pytest.fail(f"the first SIGINT was not acknowledged: {''.join(build.err)[-3000:]}")
    sent = time.monotonic()
    build.proc.send_signal(signal.SIGINT)
    exit_code, _, err = build.finish(timeout=60)

    assert exit_code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "SIGINT again: exiting at once" in err
    assert time.monotonic() - sent < startup * 3 + 5
    assert gone(marker) == []  # bubblewrap's --die-with-parent took the sandboxes down with the process


def test_a_killed_build_is_marked_crashed_by_the_next_command(tmp_path: Path, repo: Path, db: Store) -> None:
    marker = f"ffsleep{uuid.uuid4().hex[:10]}"
    build = plain_build(tmp_path, repo, marker, "run-killed", attempts=2)
    build.wait_for_sleepers(marker, 2)
    pid = build.proc.pid
    build.proc.send_signal(signal.SIGKILL)
    build.finish(timeout=30)

    nxt = subprocess.run([sys.executable, "-m", "fibreflow.cli", "learn", "stats", "--json"], cwd=tmp_path,
                         env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert nxt.returncode == 0, nxt.stderr
    assert "marked 1 run(s) crashed" in nxt.stderr
    run = db.query_df("SELECT status, error, crash_noticed_at, orchestrator_pid, ended_at FROM runs "
                      "WHERE run_id = 'run-killed'").to_dict("records")[0]
    assert run["status"] == "crashed" and run["orchestrator_pid"] == pid and f"pid {pid}" in run["error"]
    assert run["crash_noticed_at"] is not None and run["crash_noticed_at"] == run["crash_noticed_at"]  # not NaT
    assert db.query_df("SELECT status FROM features WHERE run_id = 'run-killed'").status.tolist() == ["crashed"]


def test_a_live_build_is_not_marked_crashed(tmp_path: Path, repo: Path, db: Store) -> None:
    marker = f"ffsleep{uuid.uuid4().hex[:10]}"
    build = plain_build(tmp_path, repo, marker, "run-live", attempts=1)
    try:
        build.wait_for_sleepers(marker, 1)
        nxt = subprocess.run([sys.executable, "-m", "fibreflow.cli", "learn", "stats", "--json"], cwd=tmp_path,
                             env=os.environ.copy(), capture_output=True, text=True, timeout=120)
        assert nxt.returncode == 0 and "crashed" not in nxt.stderr, nxt.stderr
        assert db.query_df("SELECT status FROM runs WHERE run_id = 'run-live'").status.tolist() == ["running"]
    finally:
        build.proc.send_signal(signal.SIGTERM)
        build.finish(timeout=60)


def _autopilot(tmp_path: Path, marker: str, run_id: str) -> tuple[Build, Path]:
    repo = write_demo_repo(tmp_path / "demo")
    # the first build sleeps; the resumed one (its runner run ends in .2) writes the fix
    agent = f'case "$FIBREFLOW_RUN_ID" in *.2) {FIX} ;; *) exec -a {marker} sleep 1000 ;; esac'
    return Build("build", "--autopilot", GOAL, "--repo", str(repo), "--agent", "command", "--agent-command", agent,
                 "--attempts", "2", "--run-id", run_id, "--offline", "--no-progress", "--no-deploy", cwd=tmp_path), repo


def _resume(tmp_path: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fibreflow.cli", "build", "--resume", run_id, "--json"],
                          cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=300)


@pytest.mark.usefixtures("own_tmpdir")
def test_sigint_stops_the_autopilots_build_and_the_run_resumes(tmp_path: Path, db: Store) -> None:
    marker = f"ffsleep{uuid.uuid4().hex[:10]}"
    build, _ = _autopilot(tmp_path, marker, "run-ap-int")
    build.wait_for_sleepers(marker, 2)
    build.proc.send_signal(signal.SIGINT)
    exit_code, _, err = build.finish(timeout=120)

    assert exit_code == 130 and "Traceback" not in err, err
    assert "fibreflow build --resume run-ap-int" in err
    assert gone(marker) == []
    assert db.query_df("SELECT status FROM runs WHERE run_id = 'run-ap-int.goal'").status.tolist() == ["cancelled"]
    assert db.query_df("SELECT status FROM features WHERE run_id = 'run-ap-int.goal'").status.tolist() == ["cancelled"]
    assert db.scalar("SELECT state FROM autopilot_runs WHERE run_id = 'run-ap-int'") == "failed"
    assert db.scalar("SELECT status FROM autopilot_steps WHERE run_id = 'run-ap-int' AND step = 'build:goal'") \
        == "interrupted"

    resumed = _resume(tmp_path, "run-ap-int")
    assert resumed.returncode == 0, resumed.stderr
    assert db.scalar("SELECT state FROM autopilot_runs WHERE run_id = 'run-ap-int'") == "committed"
    assert db.scalar("SELECT count(*) FROM autopilot_steps WHERE status = 'running'") == 0


@pytest.mark.usefixtures("own_tmpdir")
def test_a_resumed_crashed_autopilot_run_leaves_no_running_rows(tmp_path: Path, db: Store) -> None:
    marker = f"ffsleep{uuid.uuid4().hex[:10]}"
    build, _ = _autopilot(tmp_path, marker, "run-ap-kill")
    build.wait_for_sleepers(marker, 2)
    build.proc.send_signal(signal.SIGKILL)
    build.finish(timeout=30)

    resumed = _resume(tmp_path, "run-ap-kill")
    assert resumed.returncode == 0, resumed.stderr
    steps = db.query_df("SELECT step, try_no, status FROM autopilot_steps WHERE run_id = 'run-ap-kill' "
                        "AND step = 'build:goal' ORDER BY try_no")
    assert steps.status.tolist() == ["crashed", "completed"]
    assert db.scalar("SELECT count(*) FROM autopilot_steps WHERE status = 'running'") == 0
    runs = db.query_df("SELECT run_id, status FROM runs ORDER BY run_id")
    assert runs.values.tolist() == [["run-ap-kill.goal", "crashed"], ["run-ap-kill.goal.2", "passed"]]
    assert db.scalar("SELECT count(*) FROM features WHERE status IN ('running', 'pending')") == 0
