"""`./setup.sh --help` and a mistyped mode print the usage and install nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["-h"], 0), (["tset"], 2)])
def test_usage_without_installing(tmp_path: Path, args: list[str], code: int) -> None:
    """Run from a copy in an empty directory: the usage on the right stream, the exit code, and
    no `.venv` (or anything else) created there."""
    script = tmp_path / "setup.sh"
    shutil.copy(ROOT / "setup.sh", script)
    res = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == code, res.stderr
    assert "usage: ./setup.sh [demo|test]" in (res.stdout if code == 0 else res.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setup.sh"]
