"""The interpreter a sandbox runs: found through a symlinked virtualenv, as a user's may be."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

_IN_SANDBOX = """
import json, sys
from pathlib import Path
from fibreflow.sandbox.isolation import python_dirs
from fibreflow.sandbox.local import LocalBackend

backend = LocalBackend(state_dir=Path(sys.argv[2]))
try:
    with backend.create(Path(sys.argv[1]), "quick") as sb:
        version = sb.run("python -V")
        venv = sb.run(["python", "-c", "import sys, duckdb; print(sys.prefix)"])
        shebang = sb.run([sys.executable, "-c", "print('via the link')"])
finally:
    backend.drain()
print(json.dumps({"prefix": sys.prefix, "dirs": python_dirs(),
                  "version": [version.exit_code, version.stdout + version.stderr],
                  "venv": [venv.exit_code, venv.stdout + venv.stderr],
                  "shebang": [shebang.exit_code, shebang.stdout + shebang.stderr]}))
"""


def test_a_symlinked_venv_runs_its_own_python_in_the_sandbox(tmp_path: Path, repo: Path) -> None:
    real_venv = os.path.realpath(sys.prefix)
    link = tmp_path / "link"
    link.symlink_to(real_venv, target_is_directory=True)
    # started through the link, Python itself reports the unresolved path as sys.prefix
    proc = subprocess.run([str(link / "bin" / "python"), "-c", _IN_SANDBOX, str(repo), str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["prefix"] == str(link)
    assert real_venv in out["dirs"] and str(link) in out["dirs"]
    assert out["version"] == [0, f"Python {sys.version.split()[0]}\n"]
    # the venv's interpreter (its packages importable), started by its real bin dir on PATH
    assert out["venv"] == [0, real_venv + "\n"]
    # and the link path itself is usable inside, as a script's #! line may name it
    assert out["shebang"] == [0, "via the link\n"]
