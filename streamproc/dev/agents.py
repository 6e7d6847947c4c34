"""What browsers send, for the demo and the benchmark: real user agents of current browsers
and bots, addresses from the documentation ranges, and a tiny country database for them.

The addresses are RFC 5737 / RFC 3849 documentation ranges split into made-up
countries: no real address is located, and nothing here is looked up on a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from streamproc.core.enrich.useragent import COMMON_BOTS, COMMON_BROWSERS

BROWSER_AGENTS: Final = (
    *COMMON_BROWSERS,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:145.0) Gecko/20100101 Firefox/145.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
    " Edg/142.0.0.0",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/28.0 Chrome/130.0.0.0"
    " Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6"
    " Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
    " Instagram 389.0.0.25.106 (iPhone15,3; iOS 18_5; en_US; en; scale=3.00; 1290x2796; 759416387)",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0"
    " Safari/537.36",
)
BOT_AGENTS: Final = (
    *COMMON_BOTS,
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
    " Chrome/116.0.1938.76 Safari/537.36",
    "python-requests/2.32.3",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
)
# (network, country) over the documentation ranges; ip_of() spreads visitors over them.
NETWORKS: Final = (
    ("192.0.2.0/26", "FR"),
    ("192.0.2.64/26", "DE"),
    ("192.0.2.128/25", "US"),
    ("198.51.100.0/25", "JP"),
    ("198.51.100.128/25", "BR"),
    ("203.0.113.0/25", "IN"),
    ("203.0.113.128/25", "NG"),
)


def ip_of(n: int) -> str:
    """A documentation-range address for visitor ``n`` (stable)."""
    network, _ = NETWORKS[n % len(NETWORKS)]
    base, bits = network.split("/")
    a, b, c, d = (int(x) for x in base.split("."))
    host = (n // len(NETWORKS)) % (2 ** (32 - int(bits)) - 2) + 1
    return f"{a}.{b}.{c}.{d + host}"


def write_country_db(path: Path) -> Path:
    """Write a GeoLite2-Country-layout database of :data:`NETWORKS` to ``path``.

    Needs ``mmdb-writer`` (installed with the ``test`` and ``dev`` extras); raises
    ImportError without it."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet  # type: ignore[import-untyped]  # ships no type hints

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True, description="demo")
    for network, code in NETWORKS:
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path
