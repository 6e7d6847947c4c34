"""The monitoring kit against the real tools: promtool, a Prometheus server, a live daemon.

Covers ``deploy/prometheus`` (rules, their unit tests, the example scrape
config), ``deploy/grafana/streamproc.json`` and the daemon's ``/metrics``
endpoint. Everything listens on loopback only and every wait has a deadline.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from prometheus_client import REGISTRY
from psycopg import sql

import streamproc.daemon.metrics  # noqa: F401  # registers every streamproc metric in REGISTRY
from streamproc.config import Settings
from streamproc.dev.localservers import free_port
from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, wait_ready

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/streamproc-rules.yml"
RULES_TEST = ROOT / "deploy/prometheus/streamproc-rules.test.yml"
SCRAPE = ROOT / "deploy/prometheus/scrape.yml"
DASHBOARD = ROOT / "deploy/grafana/streamproc.json"

ALERTS = {
    "StreamprocDown",
    "StreamprocAbsent",
    "StreamprocLagHigh",
    "StreamprocLagGrowing",
    "StreamprocNoCommit",
    "StreamprocOldestPendingOld",
    "StreamprocDeadLetters",
    "StreamprocReconnecting",
    "StreamprocGroupStateStale",
    "StreamprocFlushSlow",
    "StreamprocEntriesTrimmedUnprocessed",
}
REQUIRED_EXPOSED = (
    "streamproc_consumer_lag",
    "streamproc_pending_entries",
    "streamproc_oldest_pending_age_seconds",
    "streamproc_stream_length",
    "streamproc_dlq_length",
    "streamproc_events_total",
    "streamproc_batches_total",
    "streamproc_batch_entries_bucket",
    "streamproc_flush_duration_seconds_bucket",
    "streamproc_reclaimed_entries_total",
    "streamproc_trimmed_entries_total",
    "streamproc_last_commit_timestamp_seconds",
    "streamproc_reconnects_total",
    "streamproc_group_state_errors_total",
    "streamproc_build_info",
)
DASHBOARD_MUST_SHOW = (
    "streamproc_events_total",
    "streamproc_consumer_lag",
    "streamproc_pending_entries",
    "streamproc_oldest_pending_age_seconds",
    "streamproc_flush_duration_seconds_bucket",
    "streamproc_batch_entries_bucket",
    "streamproc_dlq_length",
    "streamproc_reconnects_total",
    "streamproc_last_commit_timestamp_seconds",
)
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "Inf", "NaN"}
)
GRAFANA_VARS = {"$job": "streamproc", "$instance": ".*", "$stream": ".*", "$__rate_interval": "1m"}


# -- helpers -------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """Path of a required binary; missing is a failure, never a skip."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if path is None:
        pytest.fail(f"`{name}` not found: install the Debian package `{name}` (apt-get install {name})")
    return path


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd)


def registry_names() -> set[str]:
    """Every sample name prometheus_client can expose for the registered families."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def promql_names(expr: str) -> set[str]:
    """Metric names an expression selects (Grafana variables allowed, functions and labels ignored)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery durations
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables outside selectors
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*(\()?", e):
        if m.group(2) is None and m.group(1) not in PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def dashboard_queries(dash: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(panel target expressions, templating variable queries) of a dashboard, rows included."""
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dash["panels"])
    var_queries = []
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            var_queries.append(q["query"] if isinstance(q, dict) else q)
    return exprs, var_queries


def substitute(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


class Prometheus:
    """A real ``prometheus`` server on a loopback port, queried over its HTTP API."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            "scrape_configs:\n"
            "  - job_name: streamproc\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:  # 4xx carries the JSON error
            with exc:
                body = json.load(exc)
        return body

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", f"{expr}: {body}"
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def scalar(self, expr: str) -> float | None:
        """The single sample's value, or None when the result is empty."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: expected at most one series, got {result}"
        return result[0][1] if result else None

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.2)

    def wait_equal(self, expr: str, expected: float, what: str, timeout_s: float, alive: Callable[[], None]) -> None:
        """Poll ``expr`` until its single sample equals ``expected``; the timeout names the last value seen."""
        seen: list[float | None] = [None]

        def check() -> bool:
            alive()
            seen[0] = self.scalar(expr)
            return seen[0] == expected

        try:
            self.wait(check, what, timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {expr} = {seen[0]}, expected {expected}") from None

    def wait_ready(self) -> None:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        self.wait(ready, "prometheus to be ready", timeout_s=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """One Prometheus for the module: the rules loaded, scraping a port reserved for a daemon."""
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), target_port=free_port())
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()


def fetch_metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


# -- rules ---------------------------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rules file."""
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes: every alert fires when it should and stays silent when it should not."""
    res = promtool("test", "rules", str(RULES_TEST))
    assert res.returncode == 0, res.stdout + res.stderr
    text = RULES_TEST.read_text()
    for alert in ALERTS:
        assert f"alertname: {alert}\n" in text, f"no unit test evaluates {alert}"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('streamproc_consumer_lag{job="streamproc"}) > 100000', 'streamproc_consumer_lag{job="streamproc"}) > 1e6'),
        ('outcome="dead_lettered"}[10m])) > 0.05', 'outcome="ok"}[10m])) > 0.05'),
        ("(time() - streamproc_last_commit_timestamp_seconds", "(streamproc_last_commit_timestamp_seconds"),
        ('up{job="streamproc"} == 0\n        for: 2m', 'up{job="streamproc"} == 0\n        for: 20m'),
    ],
    ids=["lag-threshold", "dlq-outcome", "no-commit-age", "down-for"],
)
def test_rule_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    """The unit tests can fail: a copy of the rules with one deliberate mistake makes `promtool test rules` fail."""
    rules = RULES.read_text()
    assert rules.count(old) == 1, f"mutation target {old!r} not found exactly once"
    (tmp_path / RULES.name).write_text(rules.replace(old, new))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    assert promtool("check", "rules", str(tmp_path / RULES.name)).returncode == 0, "the mutant must stay valid"
    res = promtool("test", "rules", str(tmp_path / RULES_TEST.name))
    assert res.returncode != 0, res.stdout + res.stderr
    assert "FAILED" in res.stdout + res.stderr


def test_every_alert_has_a_runbook_section() -> None:
    """Each alert's runbook_url names a section of docs/runbook.md that exists and is titled by the
    alert, and the runbook has no section for an alert that is gone."""
    runbook = ROOT / "docs/runbook.md"
    headings = {line[3:].strip() for line in runbook.read_text().splitlines() if line.startswith("## ")}
    urls = dict(re.findall(r"- alert: (\w+)\n(?:.*\n)*?\s+runbook_url: (\S+)\n", RULES.read_text()))
    assert set(urls) == ALERTS
    for alert, url in urls.items():
        assert url == f"docs/runbook.md#{alert.lower()}", (alert, url)
    assert headings == ALERTS


def test_scrape_config_is_valid() -> None:
    """`promtool check config` accepts the example scrape config and the rule file it references."""
    res = promtool("check", "config", str(SCRAPE))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout
    assert "job_name: streamproc" in SCRAPE.read_text()
    groups = re.findall(r"targets: \[(.*)\]\n\s+labels: \{unit: streamproc@(\d+),", SCRAPE.read_text())
    assert len(groups) >= 2, "the example shows several instances per host"
    for targets, n in groups:  # streamproc@N serves its metrics on 9463+N, as deploy/systemd says
        assert {t.strip('" ').rsplit(":", 1)[1] for t in targets.split(",")} == {str(9463 + int(n))}, targets


def test_rules_load_in_prometheus_and_are_well_formed(prometheus: Prometheus) -> None:
    """A real Prometheus loads every rule and evaluates it without error; each alert carries a
    severity and a summary and description, and selects only metrics the daemon defines."""

    def evaluated() -> bool:
        rules = [r for g in prometheus.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        return bool(rules) and all(r["health"] != "unknown" for r in rules)

    prometheus.wait(evaluated, "every rule to be evaluated once", timeout_s=30)
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["health"] for r in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
    alerts = [r for r in rules if r["type"] == "alerting"]
    assert {a["name"] for a in alerts} == ALERTS
    for a in alerts:
        assert a["labels"].get("severity") in {"critical", "warning"}, a["name"]
        assert a["annotations"].get("summary") and a["annotations"].get("description"), a["name"]
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    known = registry_names() | {"up"} | recorded
    for r in rules:
        names = promql_names(r["query"])
        assert names, f"{r['name']}: no metric found in {r['query']}"
        assert names <= known, f"{r['name']} selects unknown metrics {sorted(names - known)}"


# -- dashboard -----------------------------------------------------------------------------------------


def test_dashboard_references_only_defined_metrics() -> None:
    """The Grafana dashboard is valid JSON with a Prometheus data-source variable and stream/instance
    variables, and every PromQL expression in it selects only metrics defined in streamproc/daemon/metrics.py."""
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"instance", "stream"} <= set(variables)
    exprs, var_queries = dashboard_queries(dash)
    assert len(exprs) >= 15
    known = registry_names() | {"up"}
    seen: set[str] = set()
    for expr in exprs:
        names = promql_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"unknown metric(s) {sorted(names - known)} in {expr!r}"
        seen |= names
    for query in var_queries:
        m = re.fullmatch(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)", query)
        assert m, f"unexpected variable query {query!r}"
        assert m.group(1) in known, query
    missing = set(DASHBOARD_MUST_SHOW) - seen
    assert not missing, f"the dashboard shows no panel for {sorted(missing)}"
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_promql_name_extraction() -> None:
    """The extraction behind the dashboard and rules checks sees metrics, not functions, labels or variables."""
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(streamproc_flush_duration_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) > 1e9 and on (instance) time() - foo_bar offset 5m"
    )
    assert promql_names(expr) == {"streamproc_flush_duration_seconds_bucket", "foo_bar"}
    assert promql_names('sum(up{instance=~"a|b"}) / ignoring (x) stream_group:lag:max') == {
        "up",
        "stream_group:lag:max",
    }


def test_dashboard_queries_run_on_prometheus(prometheus: Prometheus) -> None:
    """Every dashboard query, variables substituted, is accepted by a real Prometheus (syntax and types)."""
    exprs, _ = dashboard_queries(json.loads(DASHBOARD.read_text()))
    for expr in exprs:
        body = prometheus.get("/api/v1/query", query=substitute(expr))
        assert body["status"] == "success", f"{expr}: {body.get('error')}"


# -- the daemon's /metrics -----------------------------------------------------------------------------


def test_metrics_endpoint_passes_promtool_lint(
    make_settings: Callable[..., Settings], schema: str, stream: str, r: redis.Redis, daemons: Daemons
) -> None:
    """A real daemon's /metrics text passes `promtool check metrics` with no problem reported,
    and exposes every series the rules and the dashboard rely on."""
    port = free_port()
    settings = make_settings()
    produce(r, stream, Generator(seed=3, bad_ratio=0.05).entries(200))
    proc = daemons.start(settings, STREAMPROC_METRICS_PORT=str(port), STREAMPROC_METRICS_INTERVAL_S="0.2")
    wait_ready(proc)  # the start-up has its own bound; the deadline below counts from `ready`
    drained = re.compile(rf'^streamproc_consumer_lag{{[^}}]*stream="{re.escape(stream)}"[^}}]*}} 0\.0$', re.M)
    committed = re.compile(r"^streamproc_batches_total [1-9]", re.M)
    text: str | None = None
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, daemons.logs()
        text = fetch_metrics(port)
        # Wait until a batch is committed and the group-state thread has seen the stream drained.
        if text and drained.search(text) and committed.search(text):
            break
        assert time.monotonic() < deadline, f"metrics never showed the drained stream:\n{text}\n{daemons.logs()}"
        time.sleep(0.1)
    res = promtool("check", "metrics", stdin=text)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == "" and res.stderr == "", res.stdout + res.stderr
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    missing = set(REQUIRED_EXPOSED) - exposed
    assert not missing, f"/metrics lacks {sorted(missing)}"
    assert f'stream="{stream}"' in text and 'group="g"' in text
    assert re.search(r'^streamproc_build_info\{.*version="[^"]+".*\} 1\.0$', text, re.M)


# -- the headline: Prometheus scrapes a daemon falling behind and catching up --------------------------


def test_prometheus_sees_lag_rise_while_flush_is_blocked_then_drain(
    prometheus: Prometheus,
    make_settings: Callable[..., Settings],
    database_url: str,
    schema: str,
    stream: str,
    r: redis.Redis,
    daemons: Daemons,
) -> None:
    """Through a real Prometheus scraping a real daemon: while Postgres blocks the daemon's flush (a
    table lock), the group-state thread keeps reporting, so the scraped lag + pending account for every
    produced entry and the oldest pending entry ages; once the lock is released, the scraped lag and
    pending fall to 0, the events counter equals the entries produced, the dead letters match the DLQ,
    and the recording rules follow."""
    # One consumer: nothing to reclaim (the final assertion checks no entry was processed twice).
    settings = make_settings(batch_size=100, min_idle_ms=60_000, reclaim_interval_ms=1000)
    proc = daemons.start(
        settings, STREAMPROC_METRICS_PORT=str(prometheus.target_port), STREAMPROC_METRICS_INTERVAL_S="0.5"
    )
    wait_ready(proc)  # the start-up has its own bound; the deadlines below count from `ready`
    sel = f'stream="{stream}", job="streamproc"'

    def alive() -> None:
        assert proc.poll() is None, daemons.logs()

    def wait_equal(expr: str, expected: float, what: str, timeout_s: float = 60) -> None:
        prometheus.wait_equal(expr, expected, what, timeout_s, alive)

    wait_equal(f"streamproc_consumer_lag{{{sel}}}", 0, "the idle daemon's lag (0) to be scraped", 30)
    assert prometheus.scalar('up{job="streamproc"}') == 1

    entries = list(Generator(seed=11, bad_ratio=0.02).entries(3000))
    bad = sum(1 for e in entries if e.event is None)
    assert bad > 0
    with psycopg.connect(database_url) as lock:
        # The daemon's first statement of every flush inserts into the ledger: hold it back.
        lock.execute(sql.SQL("LOCK TABLE {}.applied_ranges IN EXCLUSIVE MODE").format(sql.Identifier(schema)))
        produced_at = time.time()
        assert produce(r, stream, entries) == len(entries)
        backlog = f"streamproc_consumer_lag{{{sel}}} + streamproc_pending_entries{{{sel}}}"
        wait_equal(backlog, len(entries), "scraped lag + pending to cover every produced entry", 30)
        lag = prometheus.scalar(f"streamproc_consumer_lag{{{sel}}}")
        assert lag is not None and 0 < lag < len(entries), lag
        prometheus.wait(
            lambda: (prometheus.scalar(f"streamproc_oldest_pending_age_seconds{{{sel}}}") or 0) > 0.5,
            "the stalled batch's pending age to grow",
            30,
        )
        assert prometheus.scalar(f"streamproc_events_total{{{sel}, outcome='ok'}}") == 0
        lock.rollback()

    wait_equal(f"streamproc_consumer_lag{{{sel}}}", 0, "the scraped lag to fall back to 0", 60)
    wait_equal(f"streamproc_pending_entries{{{sel}}}", 0, "the scraped pending to fall to 0", 60)
    wait_equal(f"sum(streamproc_events_total{{{sel}}})", len(entries), "every entry to be counted by outcome", 60)
    assert prometheus.scalar(f"streamproc_events_total{{{sel}, outcome='dead_lettered'}}") == bad
    wait_equal(f"streamproc_dlq_length{{{sel}}}", bad, "the DLQ length to match the dead letters", 30)
    assert r.xlen(f"{stream}:dlq") == bad
    wait_equal(f'stream_group:streamproc_consumer_lag:max{{stream="{stream}"}}', 0, "the recording rule", 30)
    last_commit = prometheus.scalar('streamproc_last_commit_timestamp_seconds{job="streamproc"}')
    assert last_commit is not None and last_commit >= produced_at, "the last commit precedes the events"
    assert prometheus.scalar(f"streamproc_reclaimed_entries_total{{{sel}}}") == 0, "an entry was processed twice"
    alive()
