"""Reads shared between dashboard kernels (``fibreflow.twin.shared``), over a real store."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from fibreflow.store import Store
from fibreflow.twin.base import FilterState, store_token
from fibreflow.twin.figure import ASSET_ENV, ASSET_URL, is_live
from fibreflow.twin.infrastructure import InfrastructurePanel
from fibreflow.twin.shared import SharedReads, fingerprint


def test_a_second_kernel_loads_what_the_first_read(filled: Store, tmp_path: Path) -> None:
    token = store_token(filled)
    state = FilterState()
    key = ("panel", "infrastructure", InfrastructurePanel(filled).change_key(token, state))
    first = SharedReads(str(filled.path), root=tmp_path / "shared")
    data = first.get(key, lambda: InfrastructurePanel(filled).safe_load(state))
    assert first.enabled and first.reads == 1 and first.hits == 0
    # another process (a second Voila kernel) asks for the same key: no store read of its own
    script = ("import sys; from fibreflow.twin.shared import SharedReads; from fibreflow.twin.base import FilterState\n"
              "s = SharedReads(sys.argv[1], root=sys.argv[2])\n"
              "v = s.get(eval(sys.argv[3]), lambda: sys.exit('read the store'))\n"
              "print(s.hits, sorted(v['compliance']['name']))")
    out = subprocess.run([sys.executable, "-c", script, str(filled.path), str(tmp_path / "shared"), repr(key)],
                         capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[0] == "1" and out[1].strip() == str(sorted(data["compliance"]["name"]))
    # a new token is a new key: read again
    filled.insert_rows("sla_checks", [{"name": "probe_shared", "status": "ok", "value": 1.0, "threshold": 2.0,
                                       "checked_at": dt.datetime.now(dt.UTC)}])
    key2 = ("panel", "infrastructure", InfrastructurePanel(filled).change_key(store_token(filled), state))
    again = first.get(key2, lambda: InfrastructurePanel(filled).safe_load(state))
    assert first.reads == 2 and "probe_shared" in set(again["compliance"]["name"])


def test_errors_are_not_shared_and_an_open_directory_is_not_used(tmp_path: Path) -> None:
    shared = SharedReads("store", root=tmp_path / "shared")
    failure = RuntimeError("store busy")
    assert shared.get("k", lambda: failure) is failure
    assert shared.get("k", lambda: 42) == 42 and shared.reads == 2  # the error was not kept
    assert shared.get("k", lambda: 0) == 42 and shared.hits == 1
    os.chmod(tmp_path / "shared", 0o777)  # others could plant a pickle: read locally instead
    open_dir = SharedReads("store", root=tmp_path / "shared")
    assert not open_dir.enabled and open_dir.get("k", lambda: 7) == 7
    off = SharedReads("store", root=tmp_path / "other", enabled=False)
    assert off.get("k", lambda: 8) == 8 and not (tmp_path / "other").exists()


BUILDS: list[str] = []


def _bars(names: list[str], values: pd.Series) -> go.Figure:
    BUILDS.append(",".join(names))
    return go.Figure(go.Bar(x=names, y=values))


def test_fingerprints_tell_contents_apart() -> None:
    frame = pd.DataFrame({"name": ["a", "b"], "value": [1.0, 2.0],
                          "at": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)})
    assert fingerprint(frame) == fingerprint(frame.copy())
    assert fingerprint(frame) != fingerprint(frame.assign(value=[1.0, 2.5]))
    assert fingerprint(frame) != fingerprint(frame.rename(columns={"value": "v"}))
    assert fingerprint({"a": [1, (2, 3)]}) != fingerprint({"a": [1, (2, 4)]})
    assert fingerprint(FilterState(7.0, "r1")) != fingerprint(FilterState(7.0, "r2"))
    assert fingerprint(pd.DataFrame({"cells": [[1], [2]]})) != fingerprint(pd.DataFrame({"cells": [[1], [3]]}))


def test_kernels_of_a_host_build_each_figure_once(filled: Store, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Served (``LiveFigure``): unchanged inputs build nothing, and a second kernel takes the
    first one's JSON instead of building it again."""
    monkeypatch.setenv(ASSET_ENV, ASSET_URL)
    shared = SharedReads(str(filled.path), root=tmp_path / "shared")
    first, second = (InfrastructurePanel(filled, shared=shared) for _ in range(2))
    values = pd.Series([1.0, 2.0])
    BUILDS.clear()
    assert first.show("bars", _bars, ["a", "b"], values) is True
    widget = first.figures["bars"]
    assert is_live(widget) and json.loads(widget.spec)["data"][0]["x"] == ["a", "b"]
    assert first.show("bars", _bars, ["a", "b"], values.copy()) is False  # same inputs: not even built
    assert second.show("bars", _bars, ["a", "b"], values) is True  # another kernel: shown, not built
    assert second.figures["bars"].spec == widget.spec
    assert BUILDS == ["a,b"]
    assert first.show("bars", _bars, ["a", "c"], values) is True
    assert BUILDS == ["a,b", "a,c"] and json.loads(widget.spec)["data"][0]["x"] == ["a", "c"]
    with pytest.raises(TypeError, match="closure"):
        first.show("bars", lambda: _bars(["a"], values))
