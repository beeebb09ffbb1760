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
from pathlib import Path

import pytest
from local_support import processes_with, tight

from fibreflow.errors import SandboxError
from fibreflow.sandbox.isolation import python_dirs
from fibreflow.sandbox.local import LocalBackend
from fibreflow.sandbox.state import mounts_under, reap_orphans

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
            res = b.run(f"cat {a.dir}/upper/secret.txt; cat /workspace/secret.txt; cat /tmp/s; "
                        f"grep -ls {secret} /proc/[0-9]*/cmdline; cat /proc/[0-9]*/comm")
            with pytest.raises(SandboxError):
                b.read_file(str(a.dir / "upper" / "secret.txt"))
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
        res = sb.run(":(){ :|:& };:; sleep 10")
        assert res.killed and res.killed_reason == "processes"
        assert time.monotonic() - started < 5
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
        res = sb.run("while :; do :; done", timeout=1.0)
        elapsed = time.monotonic() - started
    assert res.killed and res.killed_reason == "timeout"
    assert 1.0 <= res.duration_s < 2.0 and elapsed < 2.5


def test_cpu_time_limit_holds_across_processes(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight(cpu_time_s=1)) as sb:
        res = sb.run("for i in 1 2 3; do (while :; do :; done) & done; wait", timeout=15)
    assert res.killed_reason == "cpu" and res.duration_s < 8


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
        while len(processes_with(marker)) < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        if child.poll() is not None:
            _, err = child.communicate()
        else:
            err = ""
        assert len(processes_with(marker)) >= 2, \
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
