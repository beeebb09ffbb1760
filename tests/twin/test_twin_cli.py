"""``fibreflow twin``: the Voila command it runs (the served app itself is in test_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibreflow.cli import main
from fibreflow.cli.twin import voila_command
from fibreflow.errors import ConfigError
from fibreflow.twin.figure import ASSET_ENV, ASSET_URL


def test_serves_the_notebook_on_localhost_with_a_preheated_kernel(tmp_path: Path) -> None:
    argv, env = voila_command(db=tmp_path / "x.duckdb", state_dir=tmp_path / "state")
    assert argv[1:3] == ["-m", "voila"] and argv[3].endswith("notebooks/digital_twin.ipynb")
    assert "--Voila.ip=127.0.0.1" in argv and "--port=8866" in argv
    assert {"--preheat_kernel=True", "--pool_size=1"} <= set(argv)
    assert "--VoilaExecutor.iopub_timeout=60" in argv  # a page's output that comes late still comes
    assert "--VoilaConfiguration.extension_denylist=jupyterlab-plotly" in argv  # a second plotly.js per page
    assert env["FIBREFLOW_DB"] == str((tmp_path / "x.duckdb").resolve())
    assert env[ASSET_ENV] == ASSET_URL
    bundle = tmp_path / "state" / "twin" / "labextensions" / "fibreflow-twin" / "plotly.min.js"
    assert bundle.is_file() and not bundle.is_symlink() and bundle.stat().st_size > 1_000_000
    argv, _ = voila_command(ip="0.0.0.0", port=9000, preheat=False, open_browser=False, state_dir=tmp_path)
    assert "--Voila.ip=0.0.0.0" in argv and "--port=9000" in argv and "--no-browser" in argv
    assert not any(a.startswith("--preheat_kernel") for a in argv)


def test_bad_options_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--port"):
        voila_command(port=70000, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="notebook is missing"):
        voila_command(notebook=tmp_path / "nope.ipynb", state_dir=tmp_path)
    with pytest.raises(SystemExit):
        main(["twin", "--port", "eighty"])
    assert "--port" in capsys.readouterr().err
