"""The documentation builds with `mkdocs build --strict` (every warning is an error)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    for page in ("index.html", "api/nbody/index.html", "api/cosmology/index.html", "api/params/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # The API pages are rendered from the docstrings, not empty shells.
    assert "power_spectrum" in (tmp_path / "site" / "api/nbody/index.html").read_text()
    assert "growth_table" in (tmp_path / "site" / "api/cosmology/index.html").read_text()
