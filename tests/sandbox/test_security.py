"""What the local backend must withstand: one test per line of the issue's security list.

Each attack runs for real inside a real bubblewrap sandbox; each test checks that it was
contained, that the reason reported is the right one, and that the host (and the other
sandboxes) did not change.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
from local_support import processes_with, tight
from repo_support import make_repo

from fibreflow.errors import SandboxError
from fibreflow.sandbox.backends import get_backend
from fibreflow.sandbox.isolation import python_dirs
from fibreflow.sandbox.local import LocalBackend
from fibreflow.sandbox.manager import SandboxManager
from fibreflow.sandbox.state import mounts_under, reap_orphans
from fibreflow.store import Store

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def test_writing_outside_the_workspace_fails_and_the_host_is_unchanged(backend: LocalBackend, repo: Path,
                                                                        tmp_path: Path) -> None:
    host_file = tmp_path / "host.txt"
    host_file.write_text("original")
    with backend.create(repo, tight()) as sb:
        res = sb.run(f"for p in /usr/evil /etc/evil /evil {host_file} /workspace/../evil; do "
                     "echo x > $p 2>/dev/null && echo WROTE $p; done; echo done")
        assert res.stdout == "done\n"
        for bad in ("../escape.txt", "/etc/passwd", "/workspace/../../etc/x", "a/../../b"):
            with pytest.raises(SandboxError):
                sb.write_files({bad: "x"})
    assert host_file.read_text() == "original"
    assert not Path("/usr/evil").exists() and not Path("/evil").exists()
    assert not (repo.parent / "escape.txt").exists()


def test_host_root_etc_shadow_and_work_trees_are_invisible(backend: LocalBackend, repo: Path) -> None:
    this_test = Path(__file__).resolve()
    with backend.create(repo, tight()) as sb:
        res = sb.run(f"cat /etc/shadow 2>&1; echo ---; ls -A /root; echo ---; test -e {this_test} && echo SEEN; "
                     "echo ---; ls /; echo ---; ls /etc")
    shadow, root, seen, top, etc = res.stdout.split("---\n")
    assert "No such file" in shadow
    # only the interpreter trees the sandbox needs (e.g. /root/.pyenv/versions/X) exist under /root
    needed = {Path(d).parts[2] for d in python_dirs() if d.startswith("/root/")}
    assert set(root.split()) == needed
    assert seen == ""  # the project tree (and the rest of /work) is not mounted
    allowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
               "workspace"} | {Path(d).parts[1] for d in python_dirs()}
    assert set(top.split()) <= allowed
    assert not {"shadow", "gshadow", "ssh", "sudoers"} & set(etc.split())


def test_another_sandboxs_files_and_processes_are_out_of_reach(backend: LocalBackend, repo: Path) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    with backend.create(repo, tight()) as a, backend.create(repo, tight()) as b:
        a.write_files({"secret.txt": secret})
        done: list[object] = []
        busy = threading.Thread(target=lambda: done.append(
            a.run(f"echo {secret} > /tmp/s; exec -a {secret} sleep 3")))
        busy.start()
        try:
            deadline = time.monotonic() + 10
            while not processes_with(secret) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert processes_with(secret), "the first sandbox's process did not start"
            res = b.run(f"cat {a.dir}/disk/upper/secret.txt; cat /workspace/secret.txt; cat /tmp/s; "
                        f"grep -ls {secret} /proc/[0-9]*/cmdline; cat /proc/[0-9]*/comm")
            with pytest.raises(SandboxError):
                b.read_file(str(a.dir / "disk" / "upper" / "secret.txt"))
        finally:
            busy.join()
    assert done, "the first sandbox's command failed"
    assert secret not in res.stdout
    assert "sleep" not in res.stdout.split()  # its /proc shows only its own processes


def test_api_keys_in_the_orchestrators_environment_never_enter(backend: LocalBackend, repo: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"sk-ant-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("E2B_API_KEY", key)
    with backend.create(repo, "python-tests") as sb:
        res = sb.run(f"env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {key[-12:]}")
    assert key not in res.stdout
    assert "ANTHROPIC_API_KEY" not in res.stdout and "E2B_API_KEY" not in res.stdout
    assert res.stdout.split()[-1] == "0"


def test_no_network_not_even_the_hosts_loopback(backend: LocalBackend, repo: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    probe = ("import socket\n"
             f"for target in [('127.0.0.1', {port}), ('10.255.255.1', 80), ('1.1.1.1', 53)]:\n"
             "    try:\n"
             "        socket.create_connection(target, timeout=2); print('CONNECTED', target)\n"
             "    except OSError as exc:\n"
             "        print('refused', type(exc).__name__)\n")
    try:
        with backend.create(repo, tight()) as sb:
            res = sb.run(["python", "-c", probe])
        assert "CONNECTED" not in res.stdout and res.stdout.count("refused") == 3, res.stdout + res.stderr
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever reached the host's listener
    finally:
        server.close()


def test_fork_bomb_is_contained_with_reason_processes(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight(max_processes=32)) as sb:
        started = time.monotonic()
        res = sb.run(":(){ :|:& };:; sleep 30")
        assert res.killed and res.killed_reason == "processes"
        assert time.monotonic() - started < 30  # stopped by the pid limit, not after the command's sleep
        assert sb._cgroups.pids() == set()
        assert sb.run("echo still fine").stdout == "still fine\n"
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_allocating_ten_times_the_memory_limit_is_killed_with_reason_memory(backend: LocalBackend,
                                                                           repo: Path) -> None:
    with backend.create(repo, tight(memory_mb=64)) as sb:
        res = sb.run(["python", "-c", "b = b'x' * (640 << 20); print('allocated', len(b))"])
        assert res.killed and res.killed_reason == "memory"
        assert "allocated" not in res.stdout
        assert sb.run("echo ok").stdout == "ok\n"


def test_infinite_loop_is_killed_at_the_timeout(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight()) as sb:
        started = time.monotonic()
        timeout = 1.0
        res = sb.run("while :; do :; done", timeout=timeout)
        elapsed = time.monotonic() - started
    assert res.killed and res.killed_reason == "timeout"
    assert timeout <= res.duration_s < timeout * 3 + 5 and elapsed < timeout * 3 + 5


def test_cpu_time_limit_holds_across_processes(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight(cpu_time_s=1)) as sb:
        timeout = 15
        res = sb.run("for i in 1 2 3; do (while :; do :; done) & done; wait", timeout=timeout)
    assert res.killed_reason == "cpu" and res.duration_s < timeout  # the CPU limit struck before the timeout


def test_daemons_do_not_outlive_their_command(backend: LocalBackend, repo: Path) -> None:
    marker = f"ffdaemon{uuid.uuid4().hex[:12]}"
    double_fork = ("import os, time\n"
                   "if os.fork() == 0:\n"
                   "    os.setsid()\n"
                   "    if os.fork() == 0:\n"
                   f"        os.execvp('sleep', ['{marker}-py', '300'])\n"
                   "    os._exit(0)\n"
                   "time.sleep(0.2)\n")
    with backend.create(repo, tight()) as sb:
        res = sb.run(f"(setsid sh -c 'exec -a {marker}-sh sleep 300' &) ; nohup sh -c 'exec -a {marker}-nohup "
                     f"sleep 300' >/dev/null 2>&1 & python -c \"{double_fork}\"; sleep 0.2; echo launched")
        assert res.stdout.strip() == "launched"
        assert processes_with(marker) == []  # gone as soon as the command returned
        sb.run("true")
    assert processes_with(marker) == []


def test_filling_the_disk_stops_at_the_file_size_limit(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight(max_file_size_mb=1)) as sb:
        res = sb.run("head -c 50000000 /dev/zero > big.bin")
        assert res.killed and res.killed_reason == "file_size"
        assert len(sb.read_bytes("big.bin")) <= 1 << 20
        res = sb.run(["python", "-c", "open('py.bin', 'wb').write(b'x' * 5_000_000)"])
        assert res.killed_reason == "file_size"
        tmp = sb.run("head -c 50000000 /dev/zero > /tmp/big")
        assert tmp.killed_reason == "file_size"
        size = sb.run("head -c 50000000 /dev/zero > /tmp/big; stat -c %s /tmp/big")
        assert size.exit_code == 0 and int(size.stdout) == 1 << 20  # the shell lived on, the file did not grow


def test_symlinks_to_host_paths_lead_nowhere(backend: LocalBackend, repo: Path, tmp_path: Path) -> None:
    secret_dir = tmp_path / "host-secret"
    secret_dir.mkdir()
    (secret_dir / "key.txt").write_text("HOST-SECRET")
    with backend.create(repo, tight()) as sb:
        res = sb.run(f"ln -s {secret_dir}/key.txt leak; ln -s {secret_dir} dirlink; ln -s ../../../.. up; "
                     "cat leak; cat dirlink/key.txt; cat up/etc/hostname; echo end")
        assert "HOST-SECRET" not in res.stdout and res.stdout.strip() == "end"
        for path in ("leak", "dirlink/key.txt", "up/etc/passwd"):
            with pytest.raises(SandboxError, match="outside the workspace|escapes"):
                sb.read_file(path)
        with pytest.raises(SandboxError):
            sb.write_files({"dirlink/planted.txt": "x"})
        diff = sb.diff()
        assert "HOST-SECRET" not in diff and "new file mode 120000" in diff
        sb.run("ln -s README.md inner")  # a symlink within the workspace still works
        assert sb.read_file("inner") == "# demo\n"
    assert sorted(p.name for p in secret_dir.iterdir()) == ["key.txt"]


_ORCHESTRATOR = """
import json, sys
from pathlib import Path
from fibreflow.sandbox.local import LocalBackend
backend = LocalBackend(state_dir=Path(sys.argv[1]), isolation=sys.argv[3])
sb = backend.create(Path(sys.argv[2]), "quick")
print(json.dumps({"id": sb.id, "dir": str(sb.dir), "cgroups": [str(p) for p in sb._cgroups.paths.values()]}),
      flush=True)
sb.run("(exec -a " + sys.argv[4] + "-bg sleep 300) & exec -a " + sys.argv[4] + " sleep 300")
"""


@pytest.mark.parametrize("mode", ["bwrap+overlay", "copy"])
def test_sigkill_of_the_orchestrator_is_reaped_on_next_start(tmp_path: Path, repo: Path, mode: str) -> None:
    marker = f"fforphan{uuid.uuid4().hex[:12]}"
    state = tmp_path / "state"
    child = subprocess.Popen([sys.executable, "-W", "ignore", "-c", _ORCHESTRATOR, str(state), str(repo),
                              mode, marker], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(child.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        # the sandboxed sleeps carry the marker as their argv[0]; the orchestrator (and, between
        # fork and exec, its child) only as an argument: counting those would kill it too early
        while len(processes_with(marker, argv0=True)) < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        if child.poll() is not None:
            _, err = child.communicate()
        else:
            err = ""
        assert len(processes_with(marker, argv0=True)) >= 2, \
            f"the sandboxed processes did not start (orchestrator exit {child.poll()}): {err[-2000:]}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert Path(info["dir"]).exists()  # the crash left its sandbox behind
    report = reap_orphans(state / "sandboxes")
    assert report.sandboxes == [info["id"]] and not report.errors
    assert not Path(info["dir"]).exists()
    assert not any(Path(p).exists() for p in info["cgroups"])
    assert mounts_under(state) == []
    deadline = time.monotonic() + 3
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes_with(marker) == []
    # a fresh backend reaps at start: nothing is left for it, and a second pass finds nothing
    assert LocalBackend(state_dir=state).last_reap.sandboxes == []  # type: ignore[union-attr]


def _mounted_fstype(path: Path) -> str | None:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if left.split()[4] == str(path):
                return right.split()[0]
    return None


@pytest.mark.parametrize("mode", ["bwrap+overlay", "bwrap-copy"])
def test_the_store_the_state_and_other_sandboxes_stay_hidden_in_the_default_layout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    # the defaults with `--repo .`: the store at data/fibreflow.duckdb under the working directory,
    # and here the state directory (XDG_STATE_HOME) and the home directory inside it as well
    repo = make_repo(tmp_path / "proj", {"README.md": "# demo\n", "data/pricing.yaml": "price: 1\n"})
    home = repo / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("HOME-KEY")
    monkeypatch.chdir(repo)
    for name in ("FIBREFLOW_DB", "FIBREFLOW_CONFIG", "TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(repo / ".state"))
    monkeypatch.setenv("HOME", str(home))
    store = Store()
    store.migrate()
    assert store.path == repo / "data" / "fibreflow.duckdb" and store.path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bwrap+copy warns of its reduced isolation
        manager = SandboxManager(repo=".", store=store, backend=get_backend("local", isolation=mode))
    backend = manager.backend
    assert isinstance(backend, LocalBackend) and backend.root == repo / ".state" / "fibreflow" / "sandboxes"
    secret = f"SECRET-{uuid.uuid4().hex}"
    other = make_repo(tmp_path / "other", {"README.md": "other\n"})
    boxes = [backend.create(other, tight()),  # its layers lie in the state directory, inside proj
             manager.create_sandbox("f1", tight()), manager.create_sandbox("f2", tight(memory_mb=512))]
    first, second, b = boxes
    try:
        assert first.dir.is_relative_to(repo) and not second.dir.is_relative_to(repo)
        for box in (first, second):
            box.write_files({"secret_a.txt": secret})
            box.run(f"echo {secret} > secret_b.txt")
        res = b.run("ls -A; echo ---; ls -A data; echo ---; ls -A .state; echo ---; ls -A home; echo ---; "
                    "cat data/fibreflow.duckdb* .state/fibreflow/sandboxes/*/owner.json "
                    ".state/fibreflow/sandboxes/*/*/secret_* .state/fibreflow/sandboxes/*/disk/upper/secret_* "
                    f"home/.ssh/id_ed25519; grep -rl {secret} /workspace /tmp; echo end")
        top, data, state, home_seen, rest = res.stdout.split("---\n")
        assert set(top.split()) >= {"README.md", "data", ".git"} and secret not in res.stdout
        assert data.split() == ["pricing.yaml"]  # no store, no lock, no WAL
        assert state == "" and home_seen == "" and rest == "end\n"
        with pytest.raises(FileNotFoundError):
            b.read_file("data/fibreflow.duckdb")
        with pytest.raises(FileNotFoundError):
            b.read_file(".state/fibreflow/sandboxes/" + first.id + "/owner.json")
        # an attempt that opens the store finds none; what it writes there is its own, never part of the diff
        probe = ("import duckdb\n"
                 "try:\n    duckdb.connect('data/fibreflow.duckdb', read_only=True); print('OPENED')\n"
                 "except Exception as exc:\n    print('no store:', type(exc).__name__)\n"
                 "con = duckdb.connect('data/fibreflow.duckdb')\n"
                 "con.execute('create table runs(run_id text)'); con.execute(\"insert into runs values ('x')\")\n"
                 "con.close()\n")
        res = b.run(["python", "-c", probe])
        assert res.exit_code == 0 and "no store:" in res.stdout and "OPENED" not in res.stdout, res.stderr
        res = b.run("echo change >> README.md; mkdir -p .state/fibreflow home; echo x > .state/fibreflow/planted; "
                    "echo y > home/planted; echo z > .state/own")
        assert res.ok, res.stderr
        diff = b.diff()
        assert "+change" in diff and "b/.state/own" in diff  # beside the hidden directory: the attempt's own
        assert "fibreflow.duckdb" not in diff and "secret" not in diff and "sandboxes" not in diff
        assert "planted" not in diff
    finally:
        for box in boxes:
            manager.cleanup_sandbox(box) if box is not first else box.close()
    backend.drain()
    assert store.scalar("select count(*) from sandbox_sessions") == 2  # the real store is intact
    assert not list(backend.root.iterdir())


def test_a_repository_holding_the_state_and_the_tmp_fallback_keeps_layers_outside(
        tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # like `--repo /tmp` with the state under /tmp: the first fallback for the layers of a
    # repository that contains the state directory ($TMPDIR/fibreflow-UID) lies inside it too
    top = tmp_path / "top"
    (top / "tmp").mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(top / "tmp"))
    backend = LocalBackend(state_dir=top / "state")
    secret = f"SECRET-{uuid.uuid4().hex}"
    boxes = [backend.create(repo, tight()), backend.create(top, tight()), backend.create(top, tight())]
    elsewhere, a, b = boxes
    try:
        assert elsewhere.dir.is_relative_to(top)  # over another repository: the state directory is fine
        assert not a.dir.is_relative_to(top) and not b.dir.is_relative_to(top)
        for box in (elsewhere, a):
            box.write_files({"secret.txt": secret})
        uid = os.geteuid()
        res = b.run(f"ls -A; echo ---; ls -A state tmp tmp/fibreflow-{uid} 2>&1; echo ---; "
                    f"grep -rl {secret} . /tmp 2>/dev/null; echo end")
        assert secret not in res.stdout
        listing, hidden, rest = res.stdout.split("---\n")
        assert listing.split() == ["tmp"]  # the state directory is hidden, TMPDIR only shows what is not ours
        assert "sandboxes" not in hidden and hidden.count("No such file") == 2
        assert rest == "end\n"
        assert "secret" not in b.diff()
    finally:
        for box in boxes:
            box.close()
    backend.drain()


def test_the_literal_tmp_repository_and_unplaceable_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    backend = LocalBackend(state_dir=tmp_path / "state")  # under /tmp, like the repository
    with backend.create("/tmp", tight()) as a, backend.create("/tmp", tight()) as b:
        for box in (a, b):
            assert not box.dir.is_relative_to("/tmp")  # /tmp/fibreflow-UID would be inside: /var/tmp
        a.write_files({"secret.txt": "SECRET-A"})
        state = (tmp_path / "state").relative_to("/tmp")
        res = b.run(f"ls -A {state} fibreflow-{os.geteuid()} 2>&1; cat {state}/*/*/*/secret.txt 2>&1; echo end")
        assert "SECRET-A" not in res.stdout and "sandboxes" not in res.stdout
    backend.drain()
    # a repository that contains the state directory and every fallback: refused, naming both
    with pytest.raises(SandboxError, match=r"repository / contains the sandbox state directory .*state"):
        backend.create("/", tight())
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SandboxError, match="is the home directory"):
        LocalBackend(state_dir=tmp_path / "state").create(tmp_path, tight())


@pytest.mark.parametrize("mode", ["bwrap+overlay", "bwrap-copy", "copy"])
def test_writing_past_the_disk_limit_is_killed_with_reason_disk(tmp_path: Path, repo: Path, mode: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the copy modes warn of reduced isolation
        backend = LocalBackend(state_dir=tmp_path / "state", isolation=mode)
    with backend.create(repo, tight(disk_mb=20, max_file_size_mb=512)) as sb:
        res = sb.run("dd if=/dev/zero of=big.bin bs=1M count=50")
        assert res.killed and res.killed_reason == "disk", res.stderr
        assert sb.killed_reason == "disk"
        size = sb.run("stat -c %s big.bin")
        assert size.exit_code == 0 and 0 < int(size.stdout) <= 20 << 20
        # it went to the sandbox's own tmpfs, not to the host's disk
        assert sb._disk is not None and _mounted_fstype(sb._disk) == "tmpfs"
        on_host = subprocess.run(["du", "-sxk", str(sb.dir)], capture_output=True, text=True)
        assert int(on_host.stdout.split()[0]) < 1024, on_host.stdout
        assert sb.run("rm big.bin").ok
        res = sb.run(["python", "-c", "open('py.bin', 'wb').write(b'x' * 50_000_000)"])
        assert res.killed_reason == "disk" and "No space left on device" in res.stderr
        assert sb.run("rm py.bin").ok
        with pytest.raises(SandboxError, match="disk limit of 20 MB"):
            sb.write_files({"w.bin": b"x" * (30 << 20)})
        # within the limit everything works as before
        res = sb.run("rm -f w.bin; head -c 5000000 /dev/zero > ok.bin && echo fine > f.txt && cat f.txt")
        assert res.ok and res.stdout == "fine\n" and res.killed_reason is None
        assert "b/f.txt" in sb.diff()
    backend.drain()
    assert not list(backend.root.iterdir()) and mounts_under(tmp_path) == []
