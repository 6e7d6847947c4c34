"""A bounded coverage-guided fuzz run over the decoder and the fold, in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent / "fuzz" / "fuzz_decode.py"


def test_bounded_fuzz_run_finds_no_crash(tmp_path: Path) -> None:
    """atheris feeds 150 000 generated entries (raw JSON bytes, flat field maps, JSON objects) to
    the decoder and the fold: nothing raises, every rejection has a reason and keeps its fields."""
    res = subprocess.run(
        [sys.executable, str(HARNESS), "-runs=150000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 150000 runs" in res.stderr
