"""Where notifications may be sent: the one rule against server-side request forgery.

A subscriber names the URL the server POSTs its notifications to (DSUB ConsumerReference,
FHIR channel.endpoint), so a subscription could aim the server at hosts only it can reach:
a cloud metadata service, an administration port on the loopback, a host of the internal
network. The rule, applied when a subscription is made and again at every connection (so
that a name re-pointed after the check, DNS rebinding, is caught where it matters):

- the URL is absolute `http` or `https`, with a host, without credentials or white space,
  at most 2048 characters (`endpoint_problem`);
- every address the host resolves to is an allowed destination; a connection is only ever
  opened to an allowed address (`Destinations.addresses`).

Allowed destinations are `notify_destinations` (PARTAGE_NOTIFY_DESTINATIONS), a comma list of:
`public` (globally routable addresses), `private` (RFC 1918, 100.64.0.0/10, fc00::/7),
`loopback` (127.0.0.0/8, ::1), a network or address (`10.20.0.0/16`, `2001:db8::/32`,
`192.0.2.7`), a host name (`hooks.chu-exemple.fr`) or all names under a domain
(`*.chu-exemple.fr`), trusted by name whatever they resolve to. Link-local addresses
(169.254.0.0/16, where cloud metadata services answer; fe80::/10), the metadata services'
addresses outside it (`METADATA`), unspecified, multicast and reserved addresses are refused
unless listed as a network. The default,
`public,private,loopback`, lets a deployment start without configuration (subscribers of a
health information exchange are often on the hospitals' private networks); production
lists its subscribers' networks or names (docs/notifications.md).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Settings

MAX_ENDPOINT = 2048
KEYWORDS = ("public", "private", "loopback")
DEFAULT = "public,private,loopback"
# `private`, as docs/notifications.md lists it: RFC 1918, carrier-grade NAT (100.64.0.0/10),
# unique local IPv6 (fc00::/7). Not Python's `is_private`, which also holds special-purpose
# ranges (benchmarking, documentation, "this network", 2001::/23 with Teredo...).
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                   "100.64.0.0/10", "fc00::/7"))
# Cloud metadata services that answer outside link-local: AWS's instance metadata over IPv6
# (fd00:ec2::254, in fc00::/7), Alibaba Cloud's (100.100.100.200, in 100.64.0.0/10), Oracle
# Cloud's (192.0.0.192). Never destinations unless listed as a network, as link-local is.
METADATA = tuple(ipaddress.ip_network(n) for n in ("fd00:ec2::254/128", "100.100.100.200/32", "192.0.0.192/32"))
# Not globally reachable (IANA IPv4 Special-Purpose Address Registry) though this Python's
# `is_global` may say so: 192.0.0.0/24, IETF protocol assignments (only 192.0.0.0/29 and
# 192.0.0.170/31 were non-global before Python 3.12.4). Not `public`.
NOT_GLOBAL = (ipaddress.ip_network("192.0.0.0/24"),)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationRefused(Exception):
    """The host of a notification endpoint is not an allowed destination."""


def endpoint_problem(url: str) -> str:
    """Why a notification endpoint is not a usable URL ("" when it is): an absolute http(s)
    URL with a host and no credentials in it."""
    if not url or len(url) > MAX_ENDPOINT:
        return f"the endpoint must be an absolute http(s) URL of at most {MAX_ENDPOINT} characters"
    if any(ch in url for ch in "\r\n\t "):
        return "the endpoint URL contains white space"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"the endpoint {url!r} is not a usable URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the endpoint {url!r} is not an absolute http or https URL"
    if parts.username or parts.password:
        return "the endpoint URL must not carry credentials"
    if port == 0:
        return "the endpoint URL names port 0"
    return ""


def _plain(ip: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class Destinations:
    keywords: frozenset[str]
    networks: tuple[Network, ...]
    names: tuple[str, ...]          # exact host names, lower case
    domains: tuple[str, ...]        # ".example.org" for "*.example.org"

    @classmethod
    def parse(cls, text: str) -> Destinations:
        """The setting's entries; ValueError naming the first one that is none of the forms."""
        keywords: set[str] = set()
        networks: list[Network] = []
        names: list[str] = []
        domains: list[str] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry in KEYWORDS:
                keywords.add(entry)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            label = entry.removeprefix("*.")
            if not label or any(not part or not all(c.isalnum() or c == "-" for c in part)
                                for part in label.split(".")):
                raise ValueError(f"{raw.strip()!r} is not public, private, loopback, a network (CIDR), "
                                 "a host name or *.domain")
            (domains if entry.startswith("*.") else names).append(("." + label) if entry.startswith("*.") else label)
        if not (keywords or networks or names or domains):
            raise ValueError("no destination is allowed: every subscription would be refused")
        return cls(frozenset(keywords), tuple(networks), tuple(names), tuple(domains))

    @classmethod
    def from_settings(cls, settings: Settings) -> Destinations:
        return cls.parse(settings.notify_destinations)

    # --- the decision --------------------------------------------------------------------------
    def trusts_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(d) for d in self.domains)

    def allows(self, ip: Address) -> bool:
        ip = _plain(ip)
        if _within(ip, self.networks):
            return True
        if ip.is_loopback:   # before is_reserved: ::1 is in the reserved ::/8
            return "loopback" in self.keywords
        if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved or _within(ip, METADATA):
            return False
        if ip.is_global and not _within(ip, NOT_GLOBAL):
            return "public" in self.keywords
        return "private" in self.keywords and _within(ip, PRIVATE)

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses of `host` a connection may be opened to (in resolver order);
        DestinationRefused if none, socket.gaierror if the name does not resolve."""
        literal = _literal(host)
        if literal is not None:
            if self.allows(literal) or self.trusts_name(host):
                return [str(literal)]
            raise DestinationRefused(f"{host} is not an allowed notification destination")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = [i[4][0] for i in infos if isinstance(i[4][0], str)]   # IPv4, IPv6: (address, port, ...)
        if self.trusts_name(host):
            return found
        allowed = [a for a in found if self.allows(ipaddress.ip_address(a.split("%")[0]))]
        if not allowed or len(allowed) != len(found):
            refused = sorted({a for a in found if a not in allowed})
            raise DestinationRefused(f"{host} resolves to {', '.join(refused)}, not an allowed notification "
                                     "destination")
        return allowed

    def url_problem(self, url: str) -> str:
        """Why the server may not send notifications to `url` ("" when it may)."""
        problem = endpoint_problem(url)
        if problem:
            return problem
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            self.addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
        except DestinationRefused as exc:
            return f"{exc} (PARTAGE_NOTIFY_DESTINATIONS)"
        except (OSError, UnicodeError) as exc:
            return f"the endpoint's host {host!r} cannot be resolved ({type(exc).__name__})"
        return ""


def destination(url: str) -> str:
    """Where a notification to `url` connects: `host:port`, the host lowercased, the scheme's
    port when none is named (the unit the sender shares its threads by, docs/notifications.md)."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    except ValueError:
        return url


def _within(ip: Address, networks: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
