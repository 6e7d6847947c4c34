"""A small smoke run of the benchmark: it runs end to end and reports what it says it does."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(argv: list[str], redis_url: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """``python -m <argv>`` on the test's servers; the test fails on a non-zero exit."""
    env = {"PATH": "/usr/bin:/bin", "STREAMPROC_REDIS_URL": redis_url, "STREAMPROC_DATABASE_URL": database_url}
    res = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_bench_smoke_run_prints_table_json_and_plot(tmp_path: Path, redis_url: str, database_url: str) -> None:
    """`python -m bench` measures the three yardsticks and the Postgres bound on one workload,
    writes JSON with ratios computed in the same run, and a PNG plot of throughput vs batch size."""
    out, png = tmp_path / "bench.json", tmp_path / "sweep.png"
    res = run_bench(
        [
            "bench",
            "--events",
            "3000",
            "--workers",
            "2",
            "--naive-events",
            "300",
            "--sweep-events",
            "1000",
            "--batch-sizes",
            "100,1000",
            "--latency-rate",
            "1000",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
        redis_url,
        database_url,
    )
    data = json.loads(out.read_text())
    names = [r["name"] for r in data["runs"]]
    assert names[0].startswith("ceiling") and names[1].startswith("naive") and len(names) == 5
    assert names[4].startswith("postgres bound")
    ceiling = data["runs"][0]
    assert ceiling["ratio_to_ceiling"] == 1.0
    for run in data["runs"][2:]:
        assert run["events"] == 3000, run  # every entry accounted for: ok + dead-lettered + duplicates
        assert 0 < run["ratio_to_ceiling"] < 1.5
        assert abs(run["ratio_to_ceiling"] - run["events_per_s"] / ceiling["events_per_s"]) < 1e-3
    assert [s["batch_size"] for s in data["sweep"]] == [100, 1000]
    lat = data["latency"]
    assert lat["measured"] == lat["events"] == 3000, lat  # every offered event found in a committed batch
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert set(data["profile"]["us_per_event"]) >= {"read", "decode", "fold", "flush", "ack", "total"}
    assert "x ceiling" in res.stdout
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (700, 400)


def test_scaleout_simulation_smoke_run(tmp_path: Path, redis_url: str, database_url: str) -> None:
    """`python -m bench.scaleout` drains sharded streams with several workers and reports lag samples."""
    out = tmp_path / "scaleout.json"
    run_bench(
        [
            "bench.scaleout",
            "--shards",
            "3",
            "--workers",
            "2",
            "--events",
            "3000",
            "--json",
            str(out),
        ],
        redis_url,
        database_url,
    )
    data = json.loads(out.read_text())
    assert (data["shards"], data["workers"], data["exit_codes"]) == (3, 2, [0, 0])
    assert data["lag_samples"][0]["lag"] > 0 and data["events_per_s"] > 0


def test_scaleout_on_a_cluster_smoke_run(tmp_path: Path, redis_url: str, database_url: str) -> None:
    """`python -m bench.scaleout --cluster 3` puts the shards on a throwaway 3-primary cluster."""
    out = tmp_path / "scaleout.json"
    args = ["--shards", "4", "--workers", "1", "--events", "2000", "--cluster", "3", "--json", str(out)]
    res = run_bench(["bench.scaleout", *args], redis_url, database_url)
    data = json.loads(out.read_text())
    assert (data["redis_cluster_primaries"], data["exit_codes"]) == (3, [0])
    assert "on a 3-primary cluster" in res.stdout


def test_cluster_read_bench_smoke_run(redis_url: str, database_url: str) -> None:
    """`python -m bench.clusterread` times both ways of reading every shard of a throwaway
    cluster, each read checked to bring back every entry asked for."""
    args = ["--primaries", "3", "--shards", "3", "--count", "10", "--reads", "5"]
    res = run_bench(["bench.clusterread", *args], redis_url, database_url)
    lines = [line.split(":")[0].strip() for line in res.stdout.splitlines() if "ms per read" in line]
    assert lines == ["pipelined", "counted"], res.stdout


def test_uniques_bench_smoke_run(tmp_path: Path, redis_url: str, database_url: str) -> None:
    """`python -m bench.uniques` runs both modes on one workload and reports errors and space."""
    out = tmp_path / "uniques.json"
    args = ["--events", "4000", "--visitors", "3000", "--json", str(out)]
    res = run_bench(["bench.uniques", *args], redis_url, database_url)
    data = json.loads(out.read_text())
    exact, approx = data["runs"]["exact"], data["runs"]["approximate"]
    assert exact["unique_rows"] > approx["unique_rows"] > 0
    assert data["errors"]["site_range_visitors"]["figures"] == 5
    assert 0 <= data["errors"]["path_visitors"]["max_abs_rel_error"] < 0.5
    assert "throughput approximate / exact" in res.stdout


def test_memory_bench_smoke_run(tmp_path: Path, redis_url: str, database_url: str) -> None:
    """`python -m bench.memory` drains streams of several lengths and reports peak RSS for each."""
    out = tmp_path / "memory.json"
    res = run_bench(["bench.memory", "--events", "1000,3000", "--json", str(out)], redis_url, database_url)
    rows = json.loads(out.read_text())
    assert [r["events"] for r in rows] == [1000, 3000]
    assert all(r["peak_rss_mb"] > 10 and r["events_per_s"] > 0 for r in rows)
    assert "peak RSS from 1,000 to 3,000 events" in res.stdout


def test_write_cost_bench_smoke_run(tmp_path: Path) -> None:
    """`python -m bench.writecost` drains both shapes in both modes on its own durable Postgres
    and reports rows and WAL bytes per event (and the WAL by kind of record), with the ledger
    writing far fewer rows than events."""
    out = tmp_path / "writecost.json"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # its own servers: initdb, pg_ctl, runuser as root
    res = subprocess.run(
        [sys.executable, "-m", "bench.writecost", "--events", "2000", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["durable"] is True
    cases = {(c["shape"], c["mode"]): c for c in data["cases"]}
    assert set(cases) == {(s, m) for s in ("live", "hard") for m in ("exact", "approximate")}
    for case in cases.values():
        assert case["events"] == 2000, case  # every entry accounted for
        assert 0 < case["rows_per_event"] < 20 and 100 < case["wal_bytes_per_event"] < 20_000
        assert case["rows_per_event_by_table"]["applied_ranges"] < 0.05  # a row per batch, not per event
        assert case["cpu_us_per_event"] > 0 and case["ratio_to_ceiling"] > 0
        assert 0 <= case["cpu_us_per_event_after_ready"] <= case["cpu_us_per_event"]  # start-up apart
        kinds = case["wal_per_event_by_kind"]  # pg_waldump's records account for the LSN delta
        assert kinds["heap inserts"]["records"] > 0.5 and kinds["index entries"]["bytes"] > 0, kinds
        accounted = sum(k["bytes"] for k in kinds.values())
        assert 0.9 * case["wal_bytes_per_event"] <= accounted <= case["wal_bytes_per_event"], (accounted, case)
    hard = cases[("hard", "exact")]["rows_per_event_by_table"]
    assert hard["producer_ids"] > 0.9  # the hard shape: a producer id on every event
    assert "visitor_runs" not in hard  # every event there carries a session: its runs live on its own row
    assert "rows/event" in res.stdout
