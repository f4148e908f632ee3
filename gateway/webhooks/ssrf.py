"""Which destinations a webhook may reach (security.md §2.7): the SSRF guard.

A webhook URL is typed by an admin, but it is the *gateway* that connects to it, from inside
the operator's network. Without a guard, a URL is a way to make the gateway POST to the cloud
metadata service (169.254.169.254), an internal admin port on loopback, or anything on the
private network. So:

* only ``https``: a plain-text POST exposes the payload to the network and lets anyone on the
  path hold, drop or replay it (``CALLGATE_WEBHOOK_ALLOW_HTTP`` admits ``http`` for tests and
  local development); no credentials in the URL, no fragment, a real host name;
* the host is resolved and **every** answer must be a globally routable address: loopback,
  RFC 1918, link-local (cloud metadata), CGNAT, multicast, unspecified, reserved, IPv6 unique
  local / link-local, and IPv4 addresses hidden inside IPv6 (IPv4-mapped, 6to4, Teredo, NAT64)
  are refused;
* the check runs at registration *and* before every attempt (DNS can change in between), and
  the connection then goes to the very address that was checked (``transport``), so a DNS
  answer that changes between check and connect (rebinding) cannot slip through.

``CALLGATE_WEBHOOK_ALLOW_PRIVATE`` (tests only) admits loopback, RFC 1918 and unique-local
addresses; link-local, multicast and the other special ranges stay refused even then.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "BlockedDestination",
    "Destination",
    "IPAddress",
    "Resolver",
    "UnresolvableHost",
    "check_destination",
    "check_scheme",
    "parse_url",
    "refusal_reason",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]  # socket.getaddrinfo's shape

MAX_URL_LENGTH = 2048
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_ULA = ipaddress.ip_network("fc00::/7")
# Special-purpose ranges Python's ``is_private``/``is_global`` do not single out by name.
_SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
              "240.0.0.0/4", "fd00:ec2::254/128", "2001:db8::/32")
)
#: What ``allow_private`` admits: a test receiver on 127.0.0.1, or an on-prem agent.
_PRIVATE_KINDS = frozenset({"loopback", "private (RFC 1918)", "IPv6 unique local"})


class BlockedDestination(ValueError):
    """The URL or one of its addresses is not a place the gateway may connect to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnresolvableHost(ValueError):
    """DNS gave no address for the host (it may exist later: at delivery time this is retried)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed, statically acceptable webhook URL."""

    url: str
    scheme: str  # http | https
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    target: str  # the request target: path and query
    host_header: str  # what goes in ``Host`` (and whose name the TLS certificate must carry)


def parse_url(url: str) -> Destination:
    """Static checks (no DNS): scheme, credentials, host, port, length, characters."""
    if not isinstance(url, str) or not url:
        raise BlockedDestination("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise BlockedDestination(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise BlockedDestination("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedDestination(f"the URL cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BlockedDestination(f"scheme {parts.scheme or '(none)'!r} is not allowed; use https (or http)")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise BlockedDestination("credentials in the URL are not allowed (the request is signed instead)")
    if parts.fragment or url.endswith("#"):
        raise BlockedDestination("a fragment (#...) is never sent to a server; remove it")
    raw_host = parts.hostname
    if not raw_host:
        raise BlockedDestination("the URL has no host")
    if "%" in raw_host:
        raise BlockedDestination("percent-encoded or zone-scoped hosts are not allowed")
    host = _ascii_host(raw_host)
    if port == 0:
        raise BlockedDestination("port 0 is not a valid destination")
    port = port or (443 if scheme == "https" else 80)
    literal = _ip_literal(host)
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    host_header = shown if parts.port is None else f"{shown}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(url=url, scheme=scheme, host=host, port=port, target=target, host_header=host_header)


def check_scheme(dest: Destination, *, allow_http: bool) -> None:
    """Refuse plain ``http`` unless explicitly allowed. ``parse_url`` accepts both schemes (it
    only checks what a URL *is*); whether ``http`` may be *used* is this policy, applied at
    registration and again before every attempt (the setting can be turned off later)."""
    if dest.scheme == "http" and not allow_http:
        raise BlockedDestination("http is not allowed: use https (CALLGATE_WEBHOOK_ALLOW_HTTP is for tests and "
                                 "local development only)")


def refusal_reason(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why the gateway must not connect to ``ip`` (``None``: it may)."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = refusal_reason(inner, allow_private=allow_private)
        if reason is not None:
            return f"{reason}, embedded in the IPv6 address {ip}"
    kind = _kind(ip)
    if kind is None or (allow_private and kind in _PRIVATE_KINDS):
        return None
    if inner is not None and allow_private and _kind(inner) in _PRIVATE_KINDS:
        return None  # ::ffff:127.0.0.1 in a test: the same place as 127.0.0.1
    return f"{ip} is {kind}"


def resolve_checked(dest: Destination, *, allow_private: bool = False,
                    resolver: Resolver | None = None) -> list[IPAddress]:
    """Resolve the host and check every answer; the addresses to connect to, IPv4 first.

    Raises ``BlockedDestination`` when *any* answer is refused (an attacker controlling DNS
    must not win by adding one good address) and ``UnresolvableHost`` when there is none.
    """
    resolve = resolver or socket.getaddrinfo  # looked up per call: tests monkeypatch socket.getaddrinfo
    try:
        answers = resolve(dest.host, dest.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnresolvableHost(f"cannot resolve {dest.host}: {exc}") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(str(answer[4][0]).split("%", 1)[0])
        except (ValueError, IndexError, TypeError):
            raise BlockedDestination(f"{dest.host} resolved to something that is not an IP address") from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnresolvableHost(f"{dest.host} has no address")
    for ip in addresses:
        reason = refusal_reason(ip, allow_private=allow_private)
        if reason is not None:
            if _ip_literal(dest.host) is None:
                reason = f"{dest.host} resolves to a refused address: {reason}"
            raise BlockedDestination(reason)
    return sorted(addresses, key=lambda a: a.version)


def check_destination(url: str, *, allow_private: bool = False, allow_http: bool = False,
                      resolver: Resolver | None = None) -> tuple[Destination, list[IPAddress]]:
    """``parse_url``, ``check_scheme`` then ``resolve_checked``: everything the guard knows about
    a URL. A refused scheme is refused before any DNS lookup."""
    dest = parse_url(url)
    check_scheme(dest, allow_http=allow_http)
    return dest, resolve_checked(dest, allow_private=allow_private, resolver=resolver)


# -- helpers ----------------------------------------------------------------------------------


def _ascii_host(host: str) -> str:
    host = host.lower()
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BlockedDestination("the host name is not a valid internationalized domain name") from None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (and a router would deliver to), if any."""
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str | None:
    """A name for a non-public address (most specific first); ``None`` for a public one."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata lives here)"
    if ip.is_multicast:
        return "multicast"
    if ip.version == 4 and ip in _CGNAT:
        return "shared address space (CGNAT)"
    if ip.version == 4 and ip in _THIS_NETWORK:
        return "'this network' (0.0.0.0/8)"
    if any(ip.version == net.version and ip in net for net in _SPECIAL):
        return "a special-purpose address"
    if ip.version == 6 and (ip in _ULA or ip.is_site_local):  # type: ignore[union-attr]
        return "IPv6 unique local"
    if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
        return "an IPv4-mapped IPv6 address"
    if ip.is_private:
        return "private (RFC 1918)" if ip.version == 4 else "a non-public IPv6 address"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None
