"""Passwords with the characters that split URLs (`#`, `?`, `@`) never reach a log line or an error.

libpq, not a URL parser, decides what the password is: `postgresql://u:pa#ss@h/db`
connects with password `pa#ss`, while a URL parser sees a fragment. The masking
follows libpq; a raw `@` (libpq then reads part of the password as the host) is a
configuration error said in one line.
"""

from __future__ import annotations

from streamproc.config import mask_url
from streamproc.dev.localservers import free_port
from tests.conftest import Daemons, wait_for
from tests.pgroles import daemon_role, url_as
from tests.test_crash import log_lines

PASSWORD = "pa#ss?w0rd-x1"


def test_password_with_hash_and_question_mark_is_masked_as_libpq_reads_it(
    make_settings, schema, database_url: str, r, stream, daemons: Daemons
) -> None:
    """A password with a raw `#` and `?` connects (libpq reads it whole) and drains the stream;
    no part of it appears in the daemon's output, whose `starting` line shows the URL with `***`."""
    r.xadd(stream, {"event": '{"type":"page_view","site":"s","ts":1700000000000,"path":"/"}'})
    with daemon_role(database_url, schema, f"{schema}_pw", PASSWORD) as url:
        assert PASSWORD in url  # raw, as pasted
        proc = daemons.start(make_settings(database_url=url), "--drain")
        assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
    output = daemons.logs()
    for part in (PASSWORD, "ss?w0rd", "w0rd-x1"):
        assert part not in output, part
    (starting,) = log_lines(proc.logfile, "starting")  # type: ignore[attr-defined]
    assert starting["database_url"] == mask_url(url) and ":***@127.0.0.1" in starting["database_url"]


def test_unreachable_server_retry_warnings_never_show_the_password(make_settings, daemons: Daemons) -> None:
    """While Postgres cannot be reached the daemon retries; its warnings and the `starting` line
    carry no part of a password with `#` and `?` in it."""
    url = f"postgresql://streamproc:{PASSWORD}@127.0.0.1:{free_port()}/streamproc"  # nothing listens there
    proc = daemons.start(make_settings(database_url=url), "--drain")
    wait_for(lambda: "postgres unavailable, retrying" in daemons.logs(), 60, "a retry warning")
    proc.kill()
    proc.wait()
    output = daemons.logs()
    for part in (PASSWORD, "ss?w0rd", "w0rd-x1"):
        assert part not in output, part


def test_raw_at_sign_in_password_exits_2_with_one_line(make_settings, database_url: str, daemons: Daemons) -> None:
    """With a raw `@` in the password libpq would read part of it as the host (and print that in
    every retry warning): the daemon refuses at once, exit 2, one line saying to write %40,
    and no part of the password in it."""
    url = url_as(database_url, "streamproc", "se@cret-x2")
    proc = daemons.start(make_settings(), "--drain", STREAMPROC_DATABASE_URL=url)
    assert proc.wait(timeout=60) == 2, daemons.logs()[-2000:]
    output = daemons.logs()
    assert "%40" in output and "cret-x2" not in output and "se@cret" not in output, output
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output
