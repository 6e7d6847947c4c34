"""Server-side enrichment: what a page view's user agent and IP address say about it.

Pure lookups, memoised per distinct input: :mod:`.useragent` (browser, OS, device
type and bots, from Matomo's Device Detector database) and :mod:`.country` (country
from an operator-provided MaxMind-format database). :class:`Enricher` fills the
attributes a producer left out; the ones it sent always win.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from streamproc.core.enrich.country import CountryDatabase
from streamproc.core.enrich.useragent import Agent, AgentParser
from streamproc.core.events import PageView

__all__ = ["Agent", "AgentParser", "CountryDatabase", "Enricher"]


class Enricher:
    """Fills ``browser``, ``os``, ``device`` and ``country`` of page views from ``ua`` and
    ``ip``, and names the bot behind an event's user agent.

    ``derive``: when False, :meth:`page_view` adds nothing (bots are still named).
    ``filter_bots``: when False, :meth:`bot` always answers ``""`` (every event counts).
    ``country_db``: path of a ``.mmdb`` file (GeoLite2/DB-IP Country or City), or None for
    no countries. Raises :class:`~streamproc.core.enrich.country.CountryDatabaseError` when
    the file cannot be opened or is not such a database.
    """

    def __init__(
        self,
        *,
        derive: bool = True,
        filter_bots: bool = True,
        country_db: Path | None = None,
        memo_size: int = 50_000,
    ) -> None:
        self.agents = AgentParser(memo_size)
        self.countries = CountryDatabase(country_db, memo_size) if country_db is not None else None
        self.derive = derive
        self.filter_bots = filter_bots

    def bot(self, ua: str | None) -> str:
        """The bot's name (a crawler, a monitor, an HTTP library, a headless browser) or ``""``."""
        if not ua or not self.filter_bots:
            return ""
        return self.agents.parse(ua).bot

    def page_view(self, ev: PageView) -> PageView:
        """``ev`` with the attributes it lacks derived from its ``ua`` and ``ip`` (the same
        object when there is nothing to add)."""
        if not self.derive:
            return ev
        changes: dict[str, str] = {}
        if ev.ua and not (ev.browser and ev.os and ev.device):
            agent = self.agents.parse(ev.ua)
            for name, value in (("browser", agent.browser), ("os", agent.os), ("device", agent.device)):
                if value and not getattr(ev, name):
                    changes[name] = value
        if ev.ip and not ev.country and self.countries is not None:
            country = self.countries.country(ev.ip)
            if country:
                changes["country"] = country
        return msgspec.structs.replace(ev, **changes) if changes else ev

    def warm_up(self) -> None:
        """Load and compile the user-agent rules now (a few seconds) rather than on the first events."""
        self.agents.warm_up()
