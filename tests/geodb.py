"""A tiny MaxMind-format country database, written by a real writer (mmdb-writer) for the tests.

Documentation ranges only (RFC 5737, RFC 3849): no real address is located.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from mmdb_writer import MMDBWriter
from netaddr import IPSet

NETWORKS: Final = {
    "192.0.2.0/24": "FR",
    "198.51.100.0/24": "JP",
    "2001:db8:1::/48": "BR",
}
REGISTERED_ONLY: Final = {"203.0.113.0/24": "DE"}  # records with registered_country only


def write_country_db(path: Path) -> Path:
    """Write the database to ``path`` (GeoLite2-Country layout) and return the path."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True, description="tests")
    for network, code in NETWORKS.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code, "names": {"en": code}}})
    for network, code in REGISTERED_ONLY.items():
        writer.insert_network(IPSet([network]), {"registered_country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path
