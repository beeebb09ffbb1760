"""The one bounded YAML reader: hostile files fail fast, in bounded memory, with the file and line named."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fibreflow.errors import ConfigError
from fibreflow.yamlio import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_yaml

GIB = 1024**3


def _anchor_bomb() -> str:
    """405 bytes whose aliases expand to 9**9 scalars (the issue's file)."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    previous = "a"
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = f"l{level}"
    return "\n".join(lines) + "\n"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (GIB, GIB))


def test_an_anchor_bomb_fails_fast_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "slas.yaml"
    bomb.write_text(_anchor_bomb())
    assert len(bomb.read_bytes()) < 500
    proc = subprocess.run([sys.executable, "-m", "fibreflow.cli", "sla", "check", "--config", str(bomb)],
                          cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{bomb}:" in proc.stderr and f"more than {MAX_NODES} nodes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_recursive_alias_is_refused_and_ordinary_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "rec.yaml"
    path.write_text("ok: 1\na: &a [*a]\n")
    with pytest.raises(ConfigError, match=r"recursive alias \*a") as info:
        load_yaml(path)
    assert info.value.path == str(path) and info.value.line == 2
    path.write_text("base: &b {p: 1, q: 2}\nc:\n  <<: *b\n  r: 3\nl: [*b, *b]\n")
    loaded = load_yaml(path)
    assert loaded.data == {"base": {"p": 1, "q": 2}, "c": {"p": 1, "q": 2, "r": 3},
                           "l": [{"p": 1, "q": 2}, {"p": 1, "q": 2}]}
    assert loaded.line_of(["c", "r"]) == 4 and loaded.line_of(["l", 1, "q"]) == 1


def test_non_utf8_text_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 0xff") as info:
        load_yaml(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_nesting_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep") as info:
        load_yaml(path)
    assert info.value.path == str(path) and info.value.line == 1


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("x: '" + "y" * MAX_BYTES + "'\n")
    with pytest.raises(ConfigError, match=r"larger than 4096 KiB") as info:
        load_yaml(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("text, message, line", [
    ("a: 1\nwhen: 2024-02-30\n", "day is out of range for month", 2),
    ("a: 1\nb: x\x01y\n", r"character #x0001 is not allowed", 2),
    ("a: 1\nn: " + "9" * 5000 + "\n", "bad value", 2),
])
def test_values_python_cannot_build_name_their_line(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_yaml(path)
    assert info.value.path == str(path) and info.value.line == line


def _load_settings(path: Path) -> Any:
    from fibreflow.config import load_settings

    return load_settings(path)


def _load_slas(path: Path) -> Any:
    from fibreflow.sla.config import load_sla_config

    return load_sla_config(path)


def _load_script(path: Path) -> Any:
    from fibreflow.models.scripted import Script

    return Script.load(path)


def _load_features(path: Path) -> Any:
    from fibreflow.build.features import FeatureList

    return FeatureList.load(path)


def _load_profiles(path: Path) -> Any:
    from fibreflow.sandbox.profiles import load_profiles

    return load_profiles(path)


def _load_pricing(path: Path) -> Any:
    from fibreflow.models.pricing import Pricing

    return Pricing.load(path)


@pytest.mark.parametrize("load", [_load_settings, _load_slas, _load_script, _load_features, _load_profiles,
                                  _load_pricing])
def test_every_yaml_input_goes_through_the_bounded_reader(tmp_path: Path, load: Callable[[Path], Any]) -> None:
    path = tmp_path / f"{load.__name__}.yaml"
    path.write_text("a: &a [*a]\n")
    with pytest.raises(ConfigError, match=r"recursive alias") as info:
        load(path)
    assert str(info.value).startswith(f"{path}:1: ")
