"""``fibreflow sandbox serve`` through the real ``e2b`` SDK: what the backend does not use but the
SDK's users do (stdin, listing and killing commands, the filesystem service), keys, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b_support import e2b_server, sdk_opts

from fibreflow.sandbox.e2b_launch import KEY_ENV, ServerProcess

e2b = pytest.importorskip("e2b")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with e2b_server(state=tmp_path_factory.getbasetemp() / "state") as s:
        yield s


@pytest.fixture
def sandbox(server: ServerProcess) -> Iterator[e2b.Sandbox]:
    sbx = e2b.Sandbox.create(template="base", timeout=120, metadata={"test": "server"},
                             envs={"FROM_CREATE": "yes"}, **sdk_opts(server))
    yield sbx
    sbx.kill()


def test_commands_stream_take_stdin_list_and_die_when_killed(sandbox: e2b.Sandbox) -> None:
    seen: list[str] = []
    done = sandbox.commands.run("echo $FROM_CREATE $LATER; echo oops >&2", envs={"LATER": "too"},
                                on_stdout=seen.append)
    assert (done.stdout, done.stderr, done.exit_code) == ("yes too\n", "oops\n", 0)
    assert "".join(seen) == "yes too\n"
    cat = sandbox.commands.run("cat", background=True, stdin=True)
    assert [p.pid for p in sandbox.commands.list()] == [cat.pid]
    cat.send_stdin("line one\n")
    cat.close_stdin()
    assert cat.wait().stdout == "line one\n"
    sleeper = sandbox.commands.run("sleep 30", background=True)
    assert sleeper.kill() is True
    with pytest.raises(e2b.CommandExitException) as killed:
        sleeper.wait()
    assert killed.value.exit_code == 137
    assert sandbox.commands.list() == []
    assert sandbox.commands.kill(sleeper.pid) is False  # no such command any more


def test_files_live_under_home_and_the_filesystem_service_works(sandbox: e2b.Sandbox) -> None:
    sandbox.files.write_files([{"path": "/home/user/a/b.txt", "data": "text"},
                               {"path": "c.bin", "data": bytes(range(256))}])
    assert sandbox.files.read("/home/user/a/b.txt") == "text"
    assert bytes(sandbox.files.read("c.bin", format="bytes")) == bytes(range(256))
    assert sandbox.commands.run("cat a/b.txt", cwd="/home/user").stdout == "text"
    assert sorted(e.name for e in sandbox.files.list("/home/user")) == ["a", "c.bin"]
    assert sandbox.files.exists("a/b.txt") and not sandbox.files.exists("a/none.txt")
    info = sandbox.files.make_dir("/home/user/made")
    assert info is True and sandbox.files.get_info("made").type == e2b.FileType.DIR
    moved = sandbox.files.rename("a/b.txt", "made/b.txt")
    assert moved.path == "/home/user/made/b.txt" and not sandbox.files.exists("a/b.txt")
    sandbox.files.remove("made")
    assert not sandbox.files.exists("made")
    with pytest.raises(e2b.FileNotFoundException):
        sandbox.files.read("nope.txt")
    with pytest.raises(e2b.InvalidArgumentException, match="under /home/user only"):
        sandbox.files.write("/etc/passwd", "x")
    with pytest.raises(e2b.InvalidArgumentException, match="does not exist"):
        sandbox.commands.run("true", cwd="/home/user/missing")


def test_keys_are_checked_on_both_halves(server: ServerProcess, sandbox: e2b.Sandbox) -> None:
    with pytest.raises(e2b.AuthenticationException):
        e2b.Sandbox.create(**{**sdk_opts(server), "api_key": "wrong"})
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id}
    assert httpx.get(f"{server.url}/health", headers=headers).status_code == 401  # no envd access token
    token = {"X-Access-Token": sandbox._envd_access_token or ""}
    assert httpx.get(f"{server.url}/health", headers={**headers, **token}).status_code == 204
    gone = httpx.get(f"{server.url}/health", headers={"E2b-Sandbox-Id": "i0000unknown"})
    assert gone.status_code == 502 and "was not found" in gone.json()["message"]


def test_an_unknown_or_killed_sandbox_answers_like_the_cloud(server: ServerProcess) -> None:
    sbx = e2b.Sandbox.create(**sdk_opts(server))
    assert e2b.Sandbox.kill(sbx.sandbox_id, **sdk_opts(server)) is True
    with pytest.raises(e2b.SandboxNotRunningException):
        sbx.commands.run("true")
    with pytest.raises(e2b.SandboxNotRunningException):
        sbx.files.read("x")
    assert sbx.is_running() is False
    assert e2b.Sandbox.kill(sbx.sandbox_id, **sdk_opts(server)) is False
    with pytest.raises(e2b.NotFoundException):
        e2b.Sandbox.connect("i0000unknown", **sdk_opts(server))
    with pytest.raises(e2b.SandboxException, match="400: timeout must be between 1 and 86400"):
        e2b.Sandbox.create(timeout=100_000, **sdk_opts(server))


def test_serve_without_a_key_is_a_usage_error_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    res = subprocess.run([sys.executable, "-m", "fibreflow.cli", "sandbox", "serve", "--port", "0"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and KEY_ENV in res.stderr
    res = subprocess.run([sys.executable, "-m", "fibreflow.cli", "sandbox", "serve", "--key-env", "1BAD"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--key-env '1BAD'" in res.stderr
