#!/usr/bin/env python3
"""Print the Debian archives this machine's apt already uses, as one-line sources.

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.list / *.sources and keeps the
entries for one Debian release (default: bookworm), so an image built here reaches the
same archive as the host, whatever mirror or proxy the host is set up with.

    apt-sources.py [SUITE]          -> "deb URI SUITE[-updates|-security] main" lines
    apt-sources.py --mirror [SUITE] -> the URI of the main archive only (for debootstrap)

Exits 1 with a message on stderr when no entry for the release is found.
"""

from __future__ import annotations

import sys
from pathlib import Path

APT = Path("/etc/apt")


def entries() -> list[tuple[str, str]]:
    """(uri, suite) pairs of every enabled binary ("deb") source."""
    out: list[tuple[str, str]] = []
    files = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*.list"))]
    for path in files:
        if not path.is_file():
            continue
        for raw in path.read_text().splitlines():
            words = raw.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                out.append((words[0], words[1]))
    for path in sorted((APT / "sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            out.extend(
                (uri, suite) for uri in fields.get("uris", "").split() for suite in fields.get("suites", "").split()
            )
    return out


def main(argv: list[str]) -> int:
    mirror_only = "--mirror" in argv
    args = [a for a in argv if a != "--mirror"]
    release = args[0] if args else "bookworm"
    wanted = {release, f"{release}-updates", f"{release}-security"}
    found = [(uri.rstrip("/"), suite) for uri, suite in entries() if suite in wanted]
    if not found:
        print(f"no apt source for Debian {release} in {APT}", file=sys.stderr)
        return 1
    if mirror_only:
        main_archive = [uri for uri, suite in found if suite == release]
        if not main_archive:
            print(f"no apt source for the main Debian {release} archive in {APT}", file=sys.stderr)
            return 1
        print(main_archive[0])
        return 0
    seen = set()
    for uri, suite in found:
        if (uri, suite) not in seen:
            seen.add((uri, suite))
            print(f"deb {uri} {suite} main")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
