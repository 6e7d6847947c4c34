"""Operator commands (status, pending, claim, ack, dlq, consumers, trim, top) against a real Redis."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from typer.testing import CliRunner, Result

from streamproc.cli.app import app
from streamproc.dev.localservers import free_port
from streamproc.redis.ops import parse_duration_ms
from tests.conftest import wait_for

GROUP = "g"
runner = CliRunner()


def now_ms() -> int:
    return int(time.time() * 1000)


def good(i: int = 0) -> dict[str, str]:
    return {"type": "page_view", "site": "shop.example", "ts": str(now_ms()), "path": f"/p/{i}", "visitor": "v-secret"}


def produce(r: redis.Redis, stream: str, n: int) -> list[str]:
    return [r.xadd(stream, good(i)).decode() for i in range(n)]


def read(r: redis.Redis, stream: str, consumer: str, n: int, group: str = GROUP) -> list[str]:
    reply = r.xreadgroup(group, consumer, {stream: ">"}, count=n)
    return [eid.decode() for _, entries in reply for eid, _ in entries]


def clean_env() -> dict[str, str | None]:
    return {k: None for k in os.environ if k.startswith("STREAMPROC_")}


def cli(redis_url: str, stream: str, *args: str, input: str | None = None) -> Result:
    """Run a command in-process with this test's Redis, stream and group."""
    conn = ["--redis-url", redis_url, "--streams", stream]
    if args[0] not in ("trim", "dlq"):  # these do not take --group
        conn += ["--group", GROUP]
    return runner.invoke(app, [*args, *conn], env=clean_env(), input=input)


def as_json(res: Result) -> Any:
    assert res.exit_code == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}


def dlq_fill(r: redis.Redis, stream: str, n: int, reason: str = "invalid event: bad") -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        original = {"type": "page_view", "site": "s.example", "ts": "1700000000000", "n": str(i)}
        pipe.xadd(f"{stream}:dlq", {"_dlq_source": stream, "_dlq_id": f"{i + 1}-0", "_dlq_reason": reason, **original})
    pipe.execute()


# --- durations and help ----------------------------------------------------------------------


def test_parse_duration_units() -> None:
    """Durations take ms, s, m, h, d (combinable); a plain number is milliseconds; junk is a ValueError."""
    assert parse_duration_ms("30s") == 30_000
    assert parse_duration_ms("5m") == 300_000
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("1d") == 86_400_000
    assert parse_duration_ms("250") == 250 and parse_duration_ms("250ms") == 250
    assert parse_duration_ms("1.5s") == 1500
    for bad in ("", "5x", "-1s", "s", "1h-", "1 d"):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)


@pytest.mark.parametrize(
    "args",
    [
        ("pending", "--min-idle", "5x"),
        ("consumers", "prune", "--idle", "soon"),
        ("top", "--interval", "-1s", "--iterations", "1"),
        ("dlq", "purge", "--before", "yesterday", "--dry-run"),
    ],
)
def test_bad_durations_exit_2(redis_url: str, stream: str, args: tuple[str, ...]) -> None:
    """A malformed duration is a usage error: exit 2, the flag named, no traceback."""
    res = cli(redis_url, stream, *args)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "duration" in res.stderr and "Traceback" not in res.stderr


def test_every_command_has_help_with_examples_and_exit_codes() -> None:
    """Each operator command's --help shows examples and the exit codes."""
    commands = [
        ["status"], ["pending"], ["claim"], ["ack"], ["trim"], ["top"],
        ["dlq", "list"], ["dlq", "show"], ["dlq", "replay"], ["dlq", "purge"],
        ["consumers", "list"], ["consumers", "drain"], ["consumers", "prune"],
    ]  # fmt: skip
    for cmd in commands:
        res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, cmd
        assert "Example" in res.stdout and "Exit codes" in res.stdout, cmd


# --- status -----------------------------------------------------------------------------------


def test_status_json_reports_group_state(redis_url: str, r: redis.Redis, stream: str) -> None:
    """status --json: length, first/last ids, last delivered id, lag, pending, oldest pending,
    consumers and DLQ length per stream, with the Redis password masked."""
    ids = produce(r, stream, 10)
    r.xgroup_create(stream, GROUP, id="0")
    read(r, stream, "c1", 4)
    read(r, stream, "c2", 2)
    r.xack(stream, GROUP, ids[0])
    dlq_fill(r, stream, 3)
    secret_url = redis_url.replace("redis://", "redis://:hunter2@")
    res = cli(secret_url, stream, "status", "--json")
    data = as_json(res)
    assert "hunter2" not in res.stdout and data["redis_url"].startswith("redis://:***@")
    (s,) = data["streams"]
    assert s["stream"] == stream and s["group"] == GROUP
    assert (s["length"], s["first_id"], s["last_id"]) == (10, ids[0], ids[-1])
    assert s["last_delivered_id"] == ids[5] and s["lag"] == 4 and s["lag_exact"] is True
    assert s["pending"] == 5 and s["oldest_pending_id"] == ids[1]
    assert s["oldest_pending_age_ms"] >= 0 and s["oldest_pending_idle_ms"] >= 0
    assert {c["name"]: c["pending"] for c in s["consumers"]} == {"c1": 3, "c2": 2}
    assert s["dlq_length"] == 3


def test_status_table_names_streams_and_consumers(redis_url: str, r: redis.Redis, stream: str) -> None:
    """The human status output is a set of tables naming the stream, its consumers and the DLQ."""
    produce(r, stream, 3)
    r.xgroup_create(stream, GROUP, id="0")
    read(r, stream, "worker-a", 2)
    res = runner.invoke(
        app, ["status", "--redis-url", redis_url, "--streams", stream, "--group", GROUP], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.stderr
    for text in (stream, "worker-a", "lag", "pending", "dlq", "last delivered id"):
        assert text in res.stdout


def test_status_counts_lag_when_redis_reports_null(redis_url: str, r: redis.Redis, stream: str) -> None:
    """After an undelivered entry is XDELed Redis reports lag null; status counts the
    entries after the last delivered id instead (and says the count is exact)."""
    ids = produce(r, stream, 6)
    r.xgroup_create(stream, GROUP, id="0")
    read(r, stream, "c1", 2)
    r.xdel(stream, ids[3])
    assert r.xinfo_groups(stream)[0]["lag"] is None, "precondition: Redis cannot tell the lag"
    (s,) = as_json(cli(redis_url, stream, "status", "--json"))["streams"]
    assert s["lag"] == 3 and s["lag_exact"] is True


def test_status_missing_stream_group_or_redis_exit_1(redis_url: str, r: redis.Redis, stream: str) -> None:
    """A missing stream, a missing group or an unreachable Redis: exit 1, one clear line on stderr."""
    res = cli(redis_url, stream, "status")
    assert res.exit_code == 1 and f"stream '{stream}' does not exist" in res.stderr
    produce(r, stream, 1)
    res = cli(redis_url, stream, "status")
    assert res.exit_code == 1 and "consumer group 'g' does not exist" in res.stderr
    res = cli(f"redis://:pw@127.0.0.1:{free_port()}/0", stream, "status")
    assert res.exit_code == 1 and "Redis unreachable" in res.stderr and "pw@" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1 and not res.stdout


def test_status_as_a_real_process(redis_url: str, r: redis.Redis, stream: str) -> None:
    """`python -m streamproc status --json` in a child process reads settings from the environment."""
    produce(r, stream, 2)
    r.xgroup_create(stream, "grp", id="0")
    env = {**subprocess_env(), "STREAMPROC_REDIS_URL": redis_url, "STREAMPROC_STREAMS": stream}
    res = subprocess.run(
        [sys.executable, "-m", "streamproc", "status", "--json", "--group", "grp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["streams"][0]["lag"] == 2


# --- pending, claim, ack ----------------------------------------------------------------------------


def test_pending_summary_and_filters(redis_url: str, r: redis.Redis, stream: str) -> None:
    """pending lists id, consumer, idle and delivery count; --consumer, --min-idle and --limit filter."""
    produce(r, stream, 6)
    r.xgroup_create(stream, GROUP, id="0")
    mine = read(r, stream, "c1", 4)
    read(r, stream, "c2", 2)
    (rep,) = as_json(cli(redis_url, stream, "pending", "--json"))["streams"]
    assert rep["pending"] == 6 and rep["consumers"] == {"c1": 4, "c2": 2}
    assert [e["id"] for e in rep["entries"][:4]] == mine and rep["entries"][0]["deliveries"] == 1
    assert set(rep["entries"][0]) >= {"id", "consumer", "idle_ms", "deliveries"}
    (rep,) = as_json(cli(redis_url, stream, "pending", "--consumer", "c2", "--limit", "1", "--json"))["streams"]
    assert [e["consumer"] for e in rep["entries"]] == ["c2"]
    (rep,) = as_json(cli(redis_url, stream, "pending", "--min-idle", "1h", "--json"))["streams"]
    assert rep["entries"] == [] and rep["pending"] == 6


def test_pending_show_payload_decodes_or_explains(redis_url: str, r: redis.Redis, stream: str) -> None:
    """--show-payload shows the decoded event, the reason a malformed entry would be dead-lettered,
    and says when a pending entry is no longer in the stream; without it no payload is printed."""
    ok = r.xadd(stream, good()).decode()
    bad = r.xadd(stream, {"event": '{"type":"api_request","site":"s","ts":1,"method":"GET","route":"/","status":700,'
                                   '"duration_ms":1}'}).decode()  # fmt: skip
    gone = r.xadd(stream, good()).decode()
    r.xgroup_create(stream, GROUP, id="0")
    read(r, stream, "c1", 3)
    r.xdel(stream, gone)
    plain = cli(redis_url, stream, "pending")
    assert plain.exit_code == 0 and "v-secret" not in plain.stdout
    (rep,) = as_json(cli(redis_url, stream, "pending", "--show-payload", "--json"))["streams"]
    entries = {e["id"]: e for e in rep["entries"]}
    assert entries[ok]["event"]["path"] == "/p/0" and entries[ok]["error"] is None
    assert entries[bad]["event"] is None and "599" in entries[bad]["error"] and "status" in entries[bad]["error"]
    assert entries[gone]["in_stream"] is False and "no longer in the stream" in entries[gone]["error"]
    human = runner.invoke(
        app,
        ["pending", "--show-payload", "--redis-url", redis_url, "--streams", stream, "--group", GROUP],
        env={"COLUMNS": "250"},
    )
    assert "599" in human.stdout and "/p/0" in human.stdout


def test_claim_refuses_without_confirmation_then_claims(redis_url: str, r: redis.Redis, stream: str) -> None:
    """claim without --yes and without a terminal refuses (exit 2, nothing moved); with --yes the
    entries move to the named consumer, delivery counts unchanged, and ids not pending are reported."""
    produce(r, stream, 3)
    r.xgroup_create(stream, GROUP, id="0")
    ids = read(r, stream, "c1", 2)
    res = cli(redis_url, stream, "claim", *ids, "--to", "c2", "--create")
    assert res.exit_code == 2 and "--yes" in res.stderr
    assert {row["consumer"] for row in r.xpending_range(stream, GROUP, "-", "+", 10)} == {b"c1"}
    res = cli(redis_url, stream, "claim", *ids, "1-0", "--to", "c2", "--create", "--yes", "--json")
    assert res.exit_code == 1, res.stdout + res.stderr  # 1-0 was not pending; the others are claimed
    data = json.loads(res.stdout)
    assert data["done"] == ids and data["not_pending"] == ["1-0"] and data["owners"] == {i: "c1" for i in ids}
    rows = r.xpending_range(stream, GROUP, "-", "+", 10)
    assert {row["consumer"] for row in rows} == {b"c2"} and {row["times_delivered"] for row in rows} == {1}
    res = cli(redis_url, stream, "claim", "not-an-id", "--to", "c2")
    assert res.exit_code == 2 and "not a stream entry id" in res.stderr


def test_nothing_to_do_exits_0_and_an_unknown_id_exits_1(redis_url: str, r: redis.Redis, stream: str) -> None:
    """The ops commands agree: nothing to do is success (exit 0: `dlq replay --all` on an empty DLQ,
    `consumers prune` with nothing idle, `consumers drain` of a consumer holding nothing); ids named on
    the command line that are not there exit 1 (`dlq replay --ids`, `claim`, `ack`), changing nothing."""
    produce(r, stream, 1)
    r.xgroup_create(stream, GROUP, id="0")
    for name in ("c1", "c2"):  # consumers holding nothing (the stream's one entry stays undelivered)
        r.xgroup_createconsumer(stream, GROUP, name)
    assert as_json(cli(redis_url, stream, "dlq", "replay", "--all", "--json"))["replayed"] == []
    assert as_json(cli(redis_url, stream, "consumers", "prune", "--idle", "1d", "--json"))["streams"]
    for args in (("dlq", "replay", "--ids", "1-0"), ("claim", "1-0", "--to", "c1", "--yes"),
                 ("ack", "1-0", "--force", "--yes")):  # fmt: skip
        res = cli(redis_url, stream, *args)
        assert res.exit_code == 1, (args, res.stdout + res.stderr)
    assert r.xpending(stream, GROUP)["pending"] == 0 and r.xlen(stream) == 1
    res = cli(redis_url, stream, "consumers", "drain", "c1", "--to", "c2")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert [c["name"] for c in r.xinfo_consumers(stream, GROUP)] == [b"c2"]


def test_claim_asks_on_a_terminal(redis_url: str, r: redis.Redis, stream: str) -> None:
    """On a terminal, claim asks; answering no changes nothing (exit 2), yes claims (exit 0)."""
    produce(r, stream, 1)
    r.xgroup_create(stream, GROUP, id="0")
    (eid,) = read(r, stream, "c1", 1)
    for answer, code, owner in ((b"n\n", 2, b"c1"), (b"y\n", 0, b"c2")):
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamproc", "claim", eid, "--to", "c2", "--create", "--redis-url", redis_url,
                 "--streams", stream, "--group", GROUP],
                stdin=slave, stderr=slave, stdout=subprocess.PIPE, env=subprocess_env(),
            )  # fmt: skip
            seen = b""
            deadline = time.monotonic() + 30
            while b"[y/N]" not in seen and time.monotonic() < deadline:
                if select.select([master], [], [], 0.1)[0]:
                    seen += os.read(master, 1024)
            assert b"Claim 1 pending entries" in seen, seen
            os.write(master, answer)
            proc.communicate(timeout=30)
        finally:
            os.close(master)
            os.close(slave)
        assert proc.returncode == code
        assert r.xpending_range(stream, GROUP, "-", "+", 1)[0]["consumer"] == owner


def test_ack_needs_force_and_confirmation(redis_url: str, r: redis.Redis, stream: str) -> None:
    """ack without --force refuses and explains the entries would be dropped uncounted; with --force
    it still needs --yes off a terminal; with both the entries leave the pending list."""
    produce(r, stream, 2)
    r.xgroup_create(stream, GROUP, id="0")
    ids = read(r, stream, "c1", 2)
    res = cli(redis_url, stream, "ack", *ids)
    assert res.exit_code == 2 and "never counted" in res.stderr and "--force" in res.stderr
    res = cli(redis_url, stream, "ack", *ids, "--force")
    assert res.exit_code == 2 and "--yes" in res.stderr
    assert r.xpending(stream, GROUP)["pending"] == 2
    data = as_json(cli(redis_url, stream, "ack", ids[0], "--force", "--yes", "--json"))
    assert data["done"] == [ids[0]] and r.xpending(stream, GROUP)["pending"] == 1


def test_commands_on_one_stream_need_it_named(redis_url: str, r: redis.Redis, stream: str) -> None:
    """With several streams configured, a command that changes one stream asks for --stream (exit 2)."""
    produce(r, stream, 1)
    res = runner.invoke(
        app, ["trim", "--redis-url", redis_url, "--streams", f"{stream},{stream}2", "--dry-run"], env=clean_env()
    )
    assert res.exit_code == 2 and "--stream" in res.stderr


# --- dlq ----------------------------------------------------------------------------------------


def test_dlq_list_and_show(redis_url: str, r: redis.Redis, stream: str) -> None:
    """dlq list gives length, ids and reasons (no payloads); dlq show gives every field and whether
    the entry would decode today; an unknown id exits 1."""
    dlq_fill(r, stream, 3, reason="invalid event: Expected 'int' <= 599 - at '$.status'")
    (lst,) = as_json(cli(redis_url, stream, "dlq", "list", "--limit", "2", "--json"))["streams"]
    assert lst["length"] == 3 and lst["dlq"] == f"{stream}:dlq" and len(lst["entries"]) == 2
    first = lst["entries"][0]
    assert first["source"] == stream and first["source_id"] == "1-0" and "599" in first["reason"]
    shown = as_json(cli(redis_url, stream, "dlq", "show", first["id"], "--json"))
    assert shown["fields"] == {"type": "page_view", "site": "s.example", "ts": "1700000000000", "n": "0"}
    assert shown["decodes_now"] is False and "path" in shown["decode_error"]
    human = runner.invoke(app, ["dlq", "list", "--redis-url", redis_url, "--streams", stream], env={"COLUMNS": "200"})
    assert "3 dead letters" in human.stdout and "599" in human.stdout
    res = cli(redis_url, stream, "dlq", "show", "1-0")
    assert res.exit_code == 1 and "no dead letter 1-0" in res.stderr


def test_dlq_replay_dry_run_changes_nothing(redis_url: str, r: redis.Redis, stream: str) -> None:
    """replay --dry-run lists what would move and leaves the DLQ, the stream and the log untouched."""
    dlq_fill(r, stream, 4)
    data = as_json(cli(redis_url, stream, "dlq", "replay", "--force", "--all", "--dry-run", "--json"))
    assert data["dry_run"] is True and len(data["replayed"]) == 4
    assert r.xlen(f"{stream}:dlq") == 4 and not r.exists(stream) and not r.exists(f"{stream}:dlq:replayed")


def test_dlq_replay_restores_original_fields_and_logs(redis_url: str, r: redis.Redis, stream: str) -> None:
    """replay writes a new source entry with exactly the original fields (no _dlq_*), records
    old id/new id/time in <stream>:dlq:replayed, removes the dead letter; unknown --ids exit 1."""
    dlq_fill(r, stream, 3)
    dead = [eid.decode() for eid, _ in r.xrange(f"{stream}:dlq")]
    data = as_json(cli(redis_url, stream, "dlq", "replay", "--force", "--ids", dead[1], "--json"))
    (moved,) = data["replayed"]
    assert moved["dlq_id"] == dead[1] and moved["source_id"] == "2-0"
    ((new_id, fields),) = r.xrange(stream)
    assert new_id.decode() == moved["new_id"]
    assert list(fields.items()) == [(b"type", b"page_view"), (b"site", b"s.example"), (b"ts", b"1700000000000"),
                                    (b"n", b"1")]  # fmt: skip
    ((_, log),) = r.xrange(f"{stream}:dlq:replayed")
    assert log[b"dlq_id"].decode() == dead[1] and log[b"new_id"] == new_id and log[b"source_id"] == b"2-0"
    assert abs(int(log[b"replayed_at_ms"]) - now_ms()) < 60_000
    assert [eid.decode() for eid, _ in r.xrange(f"{stream}:dlq")] == [dead[0], dead[2]]
    res = cli(redis_url, stream, "dlq", "replay", "--force", "--ids", dead[1], "--ids", dead[0])
    assert res.exit_code == 1 and dead[1] in res.stdout and r.xlen(f"{stream}:dlq") == 1
    res = cli(redis_url, stream, "dlq", "replay", "--force", "--ids", dead[2], "--all")
    assert res.exit_code == 2


def test_dlq_replay_killed_midway_loses_and_doubles_nothing(redis_url: str, r: redis.Redis, stream: str) -> None:
    """`dlq replay --all` SIGKILLed midway: every dead letter is either still in the DLQ or replayed
    exactly once (with its log entry), never both or neither; a second run finishes the job."""
    n = 30_000
    dlq_fill(r, stream, n)
    log = f"{stream}:dlq:replayed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamproc",
            "dlq",
            "replay",
            "--force",
            "--all",
            "--stream",
            stream,
            "--redis-url",
            redis_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while r.xlen(log) < 2000 and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the replay should have been killed midway"

    def numbers(key: str) -> list[bytes]:
        return [fields[b"n"] for _, fields in r.xrange(key)]

    in_dlq, in_source = numbers(f"{stream}:dlq"), numbers(stream)
    assert 0 < len(in_source) < n
    assert len(in_dlq) + len(in_source) == n and r.xlen(log) == len(in_source)
    assert not set(in_dlq) & set(in_source) and len(set(in_source)) == len(in_source)
    assert all(not k.startswith(b"_dlq_") for _, f in r.xrange(stream, count=100) for k in f)
    data = as_json(cli(redis_url, stream, "dlq", "replay", "--force", "--all", "--json"))
    assert len(data["replayed"]) == len(in_dlq) and not data["missing"]
    final = numbers(stream)
    assert r.xlen(f"{stream}:dlq") == 0 and len(final) == n and len(set(final)) == n and r.xlen(log) == n


def test_dlq_purge_before_id_or_age(redis_url: str, r: redis.Redis, stream: str) -> None:
    """purge refuses without --yes (exit 2), --dry-run only counts, and --before ID / AGE deletes
    exactly the dead letters with lower ids."""
    for ms in (1000, 2000, 3000, 4000):
        r.xadd(f"{stream}:dlq", {"_dlq_reason": "x", "a": "1"}, id=f"{ms}-0")
    r.xadd(f"{stream}:dlq", {"_dlq_reason": "x", "a": "1"})  # now: younger than any age below
    res = cli(redis_url, stream, "dlq", "purge", "--before", "3000-0")
    assert res.exit_code == 2 and "--yes" in res.stderr and r.xlen(f"{stream}:dlq") == 5
    data = as_json(cli(redis_url, stream, "dlq", "purge", "--before", "3000-0", "--dry-run", "--json"))
    assert data["matching"] == 2 and data["removed"] == 0 and r.xlen(f"{stream}:dlq") == 5
    data = as_json(cli(redis_url, stream, "dlq", "purge", "--before", "3000-0", "--yes", "--json"))
    assert data["removed"] == 2 and r.xrange(f"{stream}:dlq", count=1)[0][0] == b"3000-0"
    data = as_json(cli(redis_url, stream, "dlq", "purge", "--before", "1d", "--yes", "--json"))
    assert data["removed"] == 2 and r.xlen(f"{stream}:dlq") == 1


# --- consumers ----------------------------------------------------------------------------------


def test_consumers_drain_moves_entries_then_deletes(redis_url: str, r: redis.Redis, stream: str) -> None:
    """drain moves every pending entry of the retired consumer to the live one (also ones already
    deleted from the stream are dropped, not stuck), then deletes the retired consumer."""
    produce(r, stream, 8)
    r.xgroup_create(stream, GROUP, id="0")
    old = read(r, stream, "old", 5)
    read(r, stream, "live", 1)
    r.xdel(stream, old[2])
    data = as_json(cli(redis_url, stream, "consumers", "drain", "old", "--to", "live", "--json"))
    (s,) = data["streams"]
    assert (s["moved"], s["vanished"], s["deleted"]) == (4, 1, True)
    members = {c["name"]: c["pending"] for c in r.xinfo_consumers(stream, GROUP)}
    assert members == {b"live": 5}
    res = cli(redis_url, stream, "consumers", "drain", "old")
    assert res.exit_code == 1 and "not found" in res.stderr


def test_consumers_drain_without_to_picks_an_active_consumer(redis_url: str, r: redis.Redis, stream: str) -> None:
    """drain without --to hands the entries to the most recently active other consumer."""
    produce(r, stream, 3)
    r.xgroup_create(stream, GROUP, id="0")
    read(r, stream, "old", 2)
    time.sleep(0.05)
    read(r, stream, "recent", 1)
    (s,) = as_json(cli(redis_url, stream, "consumers", "drain", "old", "--json"))["streams"]
    assert s["to"] == "recent" and s["moved"] == 2 and s["deleted"] is True
    listed = as_json(cli(redis_url, stream, "consumers", "list", "--json"))["streams"][0]["consumers"]
    assert [(c["name"], c["pending"]) for c in listed] == [("recent", 3)]


def test_prune_never_deletes_a_consumer_with_pending_entries(redis_url: str, r: redis.Redis, stream: str) -> None:
    """prune deletes idle consumers without pending entries only; a consumer holding entries is
    skipped with the reason, a recently active one is kept, and --dry-run deletes nothing.

    No sleep decides the outcome: the test waits until Redis itself reports `empty` idle past the
    threshold, and checks `fresh` was kept only when Redis still reports it below the threshold
    after the prune (idle times only grow)."""
    produce(r, stream, 2)
    r.xgroup_create(stream, GROUP, id="0")
    read(r, stream, "holder", 2)
    r.xgroup_createconsumer(stream, GROUP, "empty")

    def idle_ms(name: bytes) -> int:
        return next(int(c["idle"]) for c in r.xinfo_consumers(stream, GROUP) if c["name"] == name)

    wait_for(lambda: min(idle_ms(b"empty"), idle_ms(b"holder")) >= 2000, what="empty and holder idle 2 s")
    r.xgroup_createconsumer(stream, GROUP, "fresh")
    (dry,) = as_json(cli(redis_url, stream, "consumers", "prune", "--idle", "2s", "--dry-run", "--json"))["streams"]
    assert "empty" in dry["deleted"] and "holder" not in dry["deleted"] and len(r.xinfo_consumers(stream, GROUP)) == 3
    (s,) = as_json(cli(redis_url, stream, "consumers", "prune", "--idle", "2s", "--json"))["streams"]
    fresh_kept = idle_ms(b"fresh") < 2000  # still under the threshold now, so it was during the prune
    assert s["deleted"] == (["empty"] if fresh_kept else ["empty", "fresh"])
    (skip,) = s["skipped"]
    assert skip["name"] == "holder" and skip["pending"] == 2 and "consumers drain holder" in skip["why"]
    left = {c["name"]: c["pending"] for c in r.xinfo_consumers(stream, GROUP)}
    assert left == ({b"holder": 2, b"fresh": 0} if fresh_kept else {b"holder": 2})


# --- trim ---------------------------------------------------------------------------------------


def test_trim_never_removes_pending_or_undelivered_entries(redis_url: str, r: redis.Redis, stream: str) -> None:
    """trim cuts to the lowest id still pending in, or undelivered to, any group; --dry-run only
    counts; once every group is done the whole stream goes; a stream without groups is refused."""
    ids = produce(r, stream, 8)
    r.xgroup_create(stream, "a", id="0")
    r.xgroup_create(stream, "b", id="0")
    read(r, stream, "a1", 8, group="a")
    r.xack(stream, "a", *[i for i in ids if i != ids[2]])  # a: ids[2] still pending
    read(r, stream, "b1", 5, group="b")
    r.xack(stream, "b", *ids[:5])  # b: ids[5] not delivered yet

    plan = as_json(cli(redis_url, stream, "trim", "--dry-run", "--json"))
    assert plan["minid"] == ids[2] and plan["removable"] == 2 and plan["removed"] is None
    assert {g["group"]: g["keep_from"] for g in plan["groups"]} == {"a": ids[2], "b": ids[5]}
    assert r.xlen(stream) == 8

    done = as_json(cli(redis_url, stream, "trim", "--json"))
    assert done["removed"] == 2 and [e.decode() for e, _ in r.xrange(stream)] == ids[2:]

    r.xack(stream, "a", ids[2])
    assert as_json(cli(redis_url, stream, "trim", "--json"))["removed"] == 3
    assert [e.decode() for e, _ in r.xrange(stream)] == ids[5:]

    read(r, stream, "b1", 10, group="b")
    r.xack(stream, "b", *ids[5:])
    assert as_json(cli(redis_url, stream, "trim", "--json"))["removed"] == 3 and r.xlen(stream) == 0

    other = f"{stream}-nogroups"
    produce(r, other, 1)
    res = cli(redis_url, other, "trim")
    assert res.exit_code == 1 and "no consumer group" in res.stderr and r.xlen(other) == 1


# --- top ----------------------------------------------------------------------------------------


def test_top_samples_throughput_and_dlq_growth(redis_url: str, r: redis.Redis, stream: str) -> None:
    """top takes a first sample (no rates yet), then, once entries are delivered and dead-lettered
    after it, later samples show the new lag, pending and DLQ length with positive delivered/s and
    DLQ growth/s; the human form prints one table per sample when not on a terminal.

    The work starts only after the first sample is read from top's output, and the samples are
    read until one shows it: no sleep or rate bound depends on timing."""
    produce(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "top", "--json", "--interval", "100ms", "--redis-url", redis_url,
         "--streams", stream, "--group", GROUP],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=subprocess_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = json.loads(proc.stdout.readline())
        read(r, stream, "c1", 60)
        dlq_fill(r, stream, 5)
        samples = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = json.loads(proc.stdout.readline())["streams"][0]
            samples.append(row)
            if row["pending"] == 60 and row["dlq_length"] == 5:
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert first["streams"][0]["delivered_per_s"] is None and first["streams"][0]["lag"] == 100
    assert samples[-1]["lag"] == 40 and samples[-1]["pending"] == 60 and samples[-1]["dlq_length"] == 5
    assert any(row["delivered_per_s"] > 0 for row in samples) and any(row["dlq_per_s"] > 0 for row in samples)

    human = runner.invoke(
        app,
        ["top", "--iterations", "2", "--interval", "10ms", "--redis-url", redis_url, "--streams", stream,
         "--group", GROUP],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert human.exit_code == 0 and human.stdout.count("streamproc top") == 2 and "sample 2" in human.stdout
