"""Cost of enrichment: `python -m bench.enrich --events 100000 --raw-share 0.3`.

Drains the same synthetic traffic (``raw_share`` of its visitors send only ``ua``
and ``ip``, as browsers do) with real daemons, enrichment off and on, alternating
(off, no-sessions, on, ...) in the same run on fresh schemas, and prints events/s
and the ratios. "on" is every default (browser/OS/device, bots, derived sessions)
plus a country database; "no-sessions" the same without derived sessions. The
rule-loading warm-up (a few seconds) happens before `ready`, outside the timing.
Starts throwaway Redis and Postgres unless STREAMPROC_REDIS_URL and
STREAMPROC_DATABASE_URL are set.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench import yardsticks
from bench.__main__ import servers
from streamproc.dev.agents import write_country_db
from streamproc.dev.synth import Generator
from streamproc.postgres.migrate import migrate

OFF = {"STREAMPROC_ENRICH": "0", "STREAMPROC_FILTER_BOTS": "0", "STREAMPROC_SESSION_TIMEOUT_S": "0"}
NO_SESSIONS = {"STREAMPROC_SESSION_TIMEOUT_S": "0"}
MODES = ("off", "no-sessions", "on")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.enrich", description=__doc__)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--raw-share", type=float, default=0.3, help="share of visitors sending only ua + ip")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the three modes (default 2)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    entries = list(Generator(seed=42, days=1, bad_ratio=0.002, raw_share=args.raw_share).entries(args.events))
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as tmp:
        db = write_country_db(Path(tmp) / "countries.mmdb")
        client = redis.Redis.from_url(redis_url)
        tag = secrets.token_hex(3)
        secret = secrets.token_hex(16)
        for i in range(args.rounds):
            for mode in MODES:
                schema = f"bench_enrich_{tag}_{mode.replace('-', '_')}_{i}"
                migrate(database_url, schema)
                extra = OFF if mode == "off" else {"STREAMPROC_COUNTRY_DB": str(db)}
                if mode == "no-sessions":
                    extra = {**extra, **NO_SESSIONS}
                env = yardsticks.daemon_env(redis_url, database_url, schema, secret, **extra)
                run = yardsticks.streamproc_run(client, env, f"bench:{tag}:{mode}{i}", entries, 1, 1000, Path(tmp))
                rates[mode].append(run.rate)
                print(f"enrichment {mode}, round {i + 1}: {run.rate:,.0f} events/s", file=sys.stderr)
        client.close()
    off = statistics.median(rates["off"])
    out: dict[str, Any] = {
        "events": args.events,
        "raw_share": args.raw_share,
        **{f"events_per_s_{m.replace('-', '_')}": [round(r) for r in rates[m]] for m in MODES},
        **{f"ratio_{m.replace('-', '_')}_to_off": round(statistics.median(rates[m]) / off, 3) for m in MODES[1:]},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
