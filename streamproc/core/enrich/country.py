"""IP address -> ISO 3166-1 alpha-2 country, from an operator-provided MaxMind-format database.

Any ``.mmdb`` with a ``country.iso_code`` (or ``registered_country.iso_code``) record
works: MaxMind GeoLite2/GeoIP2 Country or City, DB-IP Lite Country. Read through
``maxminddb`` (memory-mapped, no network). The address itself is never stored.
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Any

import maxminddb

from streamproc.errors import ConfigError


class CountryDatabaseError(ConfigError):
    """The country database setting names a file that is not a readable MaxMind database."""


class CountryDatabase:
    """``country(ip) -> "FR"`` or ``""`` (not in the database, or not an IP address),
    memoised over the last ``memo_size`` distinct addresses."""

    def __init__(self, path: Path, memo_size: int = 50_000) -> None:
        try:
            self._reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise CountryDatabaseError(
                f"country database {path} (STREAMPROC_COUNTRY_DB / --country-db) cannot be read: {exc}"
            ) from None
        self.path = path
        self.country = functools.lru_cache(maxsize=memo_size)(self._country)

    def _country(self, ip: str) -> str:
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:  # not an IP address
            return ""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:192.0.2.1, as dual-stack servers report IPv4 clients
        try:
            record: Any = self._reader.get(address)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return ""
        if not isinstance(record, dict):
            return ""
        for key in ("country", "registered_country"):
            part = record.get(key)
            if isinstance(part, dict) and isinstance(part.get("iso_code"), str):
                return str(part["iso_code"]).upper()
        return ""

    def close(self) -> None:
        self._reader.close()
