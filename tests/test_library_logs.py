"""Library log lines (psycopg, redis-py, Python warnings) come out as structlog JSON, never raw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# A pipeline whose connection is lost while an error is already on its way out: psycopg
# logs "error ignored terminating <psycopg.Pipeline [BAD] ...>" through `logging`.
_LOST_PIPELINE = """
import sys, warnings, psycopg
from streamproc.logs import configure
configure("info", json=True)
url = sys.argv[1]
killer = psycopg.connect(url, autocommit=True)
conn = psycopg.connect(url)
try:
    with conn.transaction(), conn.pipeline():
        conn.execute("SELECT 1")
        killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        conn.execute("SELECT 2").fetchone()
except psycopg.OperationalError:
    pass
warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
"""


def test_psycopg_lost_pipeline_line_and_warnings_are_json(database_url: str, tmp_path: Path) -> None:
    """After a real lost connection inside a pipeline, psycopg's own warning line and a Python
    warning reach stderr as JSON objects (logger name kept), not as raw text."""
    script = tmp_path / "lost.py"
    script.write_text(_LOST_PIPELINE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONWARNINGS": "always"}
    res = subprocess.run(
        [sys.executable, str(script), database_url], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stderr.splitlines() if line.strip()]  # raises on a raw line
    assert any(r["logger"] == "psycopg" and "error ignored terminating" in r["event"] for r in lines), lines
    assert any(r["logger"] == "py.warnings" and "deprecation" in r["event"] for r in lines), lines
