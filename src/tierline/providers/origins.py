"""Where a provider may send its credential: origins (scheme, host, port) and the
`follow_hosts` rules a provider trusts besides its base_url's origin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from tierline.errors import ConfigError

#: where else than base_url's origin a prediction's `urls.stream` may point (the API token is
#: sent along): "*.example.com" is any subdomain over https, "example.com" that host over
#: https, "http(s)://host[:port]" exactly that origin ("*." allowed in its host too)
DEFAULT_FOLLOW_HOSTS = ("*.replicate.com",)

Origin = tuple[str, str, int]


def url_origin(url: Any) -> Origin | None:
    """(scheme, host, port) of an absolute http(s) URL; None for anything else, and for URLs
    that parsers may read differently (credentials, backslashes, blanks, control chars)."""
    if not isinstance(url, str) or "\\" in url or any(ord(c) <= 0x20 or ord(c) == 0x7F
                                                      for c in url):
        return None
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    host = (u.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host or "@" in u.netloc:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def origin_text(o: Origin | None) -> str:
    return f"{o[0]}://{o[1]}:{o[2]}" if o else "an unusable URL"


def parse_follow_hosts(entries: Iterable[str]) -> list[Origin]:
    """`follow_hosts` entries as (scheme, host pattern, port); ConfigError when malformed."""
    rules: list[Origin] = []
    for entry in [entries] if isinstance(entries, str) else entries:
        text = str(entry).strip()
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "https", text
        hostport = rest[:-1] if rest.endswith("/") else rest
        wildcard = hostport.startswith("*.")
        o = url_origin(f"{scheme}://{hostport[2:] if wildcard else hostport}")
        if o is None or "/" in hostport or "*" in hostport[2 if wildcard else 0:]:
            raise ConfigError(f"follow_hosts entry {entry!r} is not a host, '*.domain' or "
                              "http(s)://host[:port]")
        rules.append((o[0], ("*." if wildcard else "") + o[1], o[2]))
    return rules


def host_matches(origin: Origin, rule: Origin) -> bool:
    if origin[0] != rule[0] or origin[2] != rule[2]:
        return False
    if rule[1].startswith("*."):
        return origin[1].endswith(rule[1][1:])
    return origin[1] == rule[1]
