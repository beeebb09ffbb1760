"""Sandbox profiles: the shipped file, inheritance, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibreflow.errors import ConfigError
from fibreflow.sandbox.base import SandboxProfile
from fibreflow.sandbox.profiles import PROFILES, PROFILES_FILE, load_profile, load_profiles


def test_shipped_profiles_exist_and_let_no_secret_in() -> None:
    assert set(PROFILES) >= {"quick", "python-tests", "build", "networked"}
    for name in PROFILES:
        profile = load_profile(name)
        assert profile.env_passthrough == ()  # API keys never enter unless a profile names them
        assert profile.wall_timeout_s > 0 and profile.memory_mb > 0 and profile.max_processes > 0
        assert 0 < profile.disk_mb <= profile.memory_mb * 2  # a tmpfs: memory the host must have
    assert load_profile("networked").network and not load_profile("python-tests").network
    assert load_profile("quick").wall_timeout_s < load_profile("build").wall_timeout_s


def test_extends_inherits_and_merges_env(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("base:\n  memory_mb: 100\n  env: {A: '1', B: '2'}\n"
                    "child:\n  extends: base\n  network: true\n  env: {B: three}\n"
                    "  env_passthrough: [MY_TOKEN]\n")
    child = load_profile("child", path=path)
    assert (child.memory_mb, child.network, dict(child.env), child.env_passthrough) == \
        (100, True, {"A": "1", "B": "three"}, ("MY_TOKEN",))
    given = SandboxProfile(name="custom")
    assert load_profile(given) is given


@pytest.mark.parametrize("text, line, message", [
    ("quick:\n  wall_timeout_s: 5\n  memory_mb: [1\n", 4, "malformed YAML"),
    ("quick:\n  wall_timeout_s: 5\n  memroy_mb: 100\n", 3, "unknown key 'memroy_mb'"),
    ("quick:\n  max_processes: -3\n", 2, "max_processes must be a positive number"),
    ("quick:\n  disk_mb: 0\n", 2, "disk_mb must be a positive number"),
    ("quick:\n  network: maybe\n", 2, "network must be true or false"),
    ("quick:\n  env_passthrough: [ok, 'not valid']\n", 2, "env_passthrough must be a list of variable names"),
    ("a:\n  extends: b\nb:\n  extends: a\n", 4, "extends forms a cycle (a -> b -> a)"),
    ("a:\n  extends: nowhere\n", 2, "extends unknown profile 'nowhere'"),
])
def test_bad_profiles_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert message in str(info.value)
    assert info.value.path == str(path) and info.value.line == line


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown sandbox profile 'tiny' \(known: quick, python-tests, "
                                          r"build, networked\)") as info:
        load_profile("tiny")
    assert info.value.path == str(PROFILES_FILE)
