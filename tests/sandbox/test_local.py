"""The local backend with real bubblewrap and a real overlay mount."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import pytest
from local_support import tight
from repo_support import git

from fibreflow.errors import SandboxError
from fibreflow.sandbox import Sandbox
from fibreflow.sandbox.isolation import MODE_BWRAP_COPY, MODE_COPY, MODE_OVERLAY
from fibreflow.sandbox.local import LocalBackend, isolation_mode

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def test_this_machine_gets_the_full_isolation() -> None:
    # CI runs as root with bwrap and overlayfs: anything less would be a silent downgrade
    assert isolation_mode() == MODE_OVERLAY


def test_run_reports_exit_code_output_and_duration(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight()) as sb:
        assert isinstance(sb, Sandbox)
        res = sb.run("echo out; echo err >&2; exit 3")
        assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
        assert not res.killed and res.killed_reason is None and not res.ok
        assert res.duration_s > 0  # its speed is `fibreflow bench sandbox`
        argv = sb.run(["printf", "%s|", "a b", "$HOME"])
        assert argv.stdout == "a b|$HOME|"  # a list is argv, never re-parsed by a shell
        where = sb.run("pwd; id -u; hostname; cat README.md")
        assert where.stdout.splitlines() == ["/workspace", "0", "sandbox", "# demo"]


def test_creation_copies_nothing_and_the_upper_layer_holds_exactly_the_change(
        backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight()) as sb:
        upper = sb.dir / "disk" / "upper"
        assert list(upper.iterdir()) == []
        sb.run("echo more >> README.md && mkdir -p new && echo x > new/file.txt")
        changed = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
        assert changed == ["README.md", "new", "new/file.txt"]
    assert (repo / "README.md").read_text() == "# demo\n"  # the repository itself is untouched
    assert not (repo / "new").exists()


def test_state_persists_between_commands_and_env_is_clean(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight(env={"FIXED": "yes"})) as sb:
        sb.run("rm README.md && echo 1 > counter")
        sb.run("echo 2 >> counter")
        res = sb.run("cat counter; test -e README.md || echo gone; echo $FIXED $EXTRA",
                     env={"EXTRA": "given"})
        assert res.stdout.split() == ["1", "2", "gone", "yes", "given"]


def test_python_and_pytest_of_the_project_venv_work_inside(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, "python-tests") as sb:
        res = sb.run("python -m pytest -q -p no:cacheprovider tests")
        assert res.exit_code == 0, res.stdout + res.stderr
        assert "1 passed" in res.stdout


def test_write_and_read_files_through_the_layers(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight()) as sb:
        sb.write_files({"pkg/new.py": "X = 1\n", "/workspace/deep/er/f.txt": b"\x00bin",
                        "README.md": "replaced\n"})
        assert sb.read_file("pkg/new.py") == "X = 1\n"
        assert sb.read_bytes("deep/er/f.txt") == b"\x00bin"
        res = sb.run("cat pkg/new.py README.md; python -c 'import pkg.calc; print(pkg.calc.add(2, 3))'")
        assert res.stdout == "X = 1\nreplaced\n5\n"
        sb.run("echo made-inside > inside.txt && rm -r pkg && rm data.bin")
        assert sb.read_file("inside.txt") == "made-inside\n"
        with pytest.raises(FileNotFoundError):
            sb.read_file("data.bin")
        with pytest.raises(FileNotFoundError):
            sb.read_file("pkg/calc.py")  # the deleted directory hides the lower one
        sb.write_files({"pkg/only.py": "Y = 2\n", "data.bin": "text now"})  # over whiteouts
        assert sb.run("ls pkg; cat data.bin").stdout == "only.py\ntext now"
        with pytest.raises(SandboxError):
            sb.write_files({"pkg": "a directory"})
    assert (repo / "pkg" / "calc.py").exists()


def test_diff_is_a_git_diff_that_applies_to_the_repository(backend: LocalBackend, repo: Path,
                                                          tmp_path: Path) -> None:
    with backend.create(repo, tight()) as sb:
        assert sb.diff() == ""
        sb.run("printf 'def add(a, b):\\n    return b + a\\n' > pkg/calc.py && rm README.md && "
               "mkdir -p docs && echo hello > docs/new.md && printf '\\000\\002\\377' > blob.bin && "
               "chmod +x tests/test_calc.py && echo noise > debug.log && mkdir -p .fibreflow && "
               "echo report > .fibreflow/junit.xml && ln -s pkg/calc.py link && git status >/dev/null")
        diff = sb.diff()
    assert "diff --git a/pkg/calc.py b/pkg/calc.py" in diff
    assert "deleted file mode 100644" in diff and "diff --git a/README.md b/README.md" in diff
    assert "diff --git a/docs/new.md b/docs/new.md\nnew file mode 100644" in diff
    assert "GIT binary patch" in diff and "b/blob.bin" in diff
    assert "old mode 100644\nnew mode 100755" in diff
    assert "new file mode 120000" in diff  # a symlink stays a symlink
    assert "debug.log" not in diff  # ignored by .gitignore
    assert ".fibreflow" not in diff and ".git/" not in diff
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "apply", "--binary", "-", input=diff.encode())
    assert (clone / "pkg" / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"
    assert not (clone / "README.md").exists()
    assert (clone / "blob.bin").read_bytes() == b"\x00\x02\xff"
    assert os.access(clone / "tests" / "test_calc.py", os.X_OK)
    assert os.readlink(clone / "link") == "pkg/calc.py"


def test_a_commit_inside_the_sandbox_is_still_part_of_the_diff(backend: LocalBackend, repo: Path) -> None:
    with backend.create(repo, tight()) as sb:
        res = sb.run("echo v2 > README.md && git -c user.name=a -c user.email=a@b commit -qam change")
        assert res.exit_code == 0, res.stderr
        assert "+v2" in sb.diff()
    assert git(repo, "log", "--oneline").count("\n") == 1  # the host repository got no commit


def test_closed_sandbox_refuses_work_and_close_is_idempotent(backend: LocalBackend, repo: Path) -> None:
    sb = backend.create(repo, tight())
    sb.run("true")
    sb.close()
    sb.close()
    assert not sb.dir.exists()
    assert sb.ended_at is not None and sb.cpu_seconds >= 0
    for call in (lambda: sb.run("true"), lambda: sb.read_file("README.md"), sb.diff,
                 lambda: sb.write_files({"a": "b"})):
        with pytest.raises(SandboxError, match="closed"):
            call()


def test_parallel_sandboxes_do_not_see_each_other(backend: LocalBackend, repo: Path) -> None:
    boxes = [backend.create(repo, tight()) for _ in range(4)]
    results: dict[int, str] = {}

    def work(i: int) -> None:
        boxes[i].run(f"echo {i} > mine.txt")
        results[i] = boxes[i].run("cat mine.txt; ls").stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, box in enumerate(boxes):
        assert results[i].startswith(f"{i}\n")
        assert box.read_file("mine.txt") == f"{i}\n"
        box.close()


def test_state_inside_the_repository_is_moved_out_of_the_sandbox_view(tmp_path: Path, repo: Path) -> None:
    be = LocalBackend(state_dir=repo / ".fibreflow")
    with be.create(repo, tight()) as sb:
        assert not sb.dir.is_relative_to(repo)
        res = sb.run(f"ls -a .fibreflow/sandboxes 2>&1; test -e {sb.id} || echo unseen")
        assert sb.id not in res.stdout.replace("unseen", "")
        assert sb.run("echo x > f").exit_code == 0


@pytest.mark.parametrize("mode", [MODE_BWRAP_COPY, MODE_COPY])
def test_fallback_modes_warn_loudly_and_still_work(tmp_path: Path, repo: Path, mode: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(RuntimeWarning, match="reduced isolation"):
        be = LocalBackend(state_dir=tmp_path / "state", isolation=mode)
    assert "reduced isolation" in caplog.text
    with be.create(repo, tight()) as sb:
        assert sb.isolation == mode
        res = sb.run("echo changed >> README.md && echo new > added.txt && cat README.md")
        assert res.stdout == "# demo\nchanged\n"
        diff = sb.diff()
        assert "+changed" in diff and "b/added.txt" in diff
        sb.write_files({"w.txt": "w"})
        assert sb.read_file("w.txt") == "w"
        slow = sb.run("sleep 30", timeout=0.5)
        assert slow.killed_reason == "timeout"
    assert (repo / "README.md").read_text() == "# demo\n"
    be.drain()
    assert not list(be.root.iterdir())


def test_unknown_isolation_mode_is_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SandboxError, match="known"):
            LocalBackend(state_dir=tmp_path, isolation="chroot")


def test_missing_repository_is_a_clear_error(backend: LocalBackend, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="not a directory"):
        backend.create(tmp_path / "nope", tight())


def test_networked_profile_reaches_the_host_and_passes_named_env(backend: LocalBackend, repo: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("FF_ALLOWED_TOKEN", "let-me-in")
    monkeypatch.setenv("FF_OTHER", "not-me")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        with backend.create(repo, tight(network=True, env_passthrough=("FF_ALLOWED_TOKEN",))) as sb:
            res = sb.run(["python", "-c", f"import socket, os; socket.create_connection(('127.0.0.1', {port}), 5)"
                         "; print(os.environ.get('FF_ALLOWED_TOKEN'), os.environ.get('FF_OTHER'))"])
        assert res.exit_code == 0, res.stderr
        assert res.stdout.split() == ["let-me-in", "None"]
    finally:
        server.close()
