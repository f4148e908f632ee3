"""The SSRF guard: every refused range, hostile DNS answers (monkeypatched resolver: nothing here
connects anywhere), URL shapes, and what CALLGATE_WEBHOOK_ALLOW_PRIVATE does and does not admit."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from gateway.webhooks.ssrf import (
    BlockedDestination,
    UnresolvableHost,
    check_destination,
    check_scheme,
    parse_url,
    refusal_reason,
    resolve_checked,
)


def resolver_for(*addresses: str) -> Any:
    """A getaddrinfo stand-in answering ``addresses`` for any name."""

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    return resolve


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),  # decimal form of 127.0.0.1
    ("http://0x7f.1/", "loopback"),  # hex form
    ("http://localhost:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped
    ("http://[::ffff:10.1.2.3]/", "private"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://[fe80::1]/", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://100.64.0.1/", "CGNAT"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://0.1.2.3/", "this network"),
    ("http://[fd00::1]/", "unique local"),
    ("http://[fd00:ec2::254]/", "special-purpose"),  # AWS IPv6 metadata
    ("http://198.18.0.1/", "special-purpose"),
    ("http://240.0.0.1/", "special-purpose"),
])
def test_non_public_destinations_are_refused(url: str, reason: str) -> None:
    with pytest.raises(BlockedDestination) as exc:
        check_destination(url, allow_http=True)  # the address is refused, whatever the scheme policy
    assert reason in exc.value.reason


def test_http_is_refused_unless_allowed_and_before_any_lookup() -> None:
    looked_up: list[str] = []

    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    with pytest.raises(BlockedDestination, match="http is not allowed: use https") as exc:
        check_destination("http://hooks.example.com/cb", resolver=resolver)  # the default: https only
    assert "CALLGATE_WEBHOOK_ALLOW_HTTP" in exc.value.reason
    assert looked_up == []  # refused on its face: nothing resolved
    dest, _ = check_destination("http://hooks.example.com/cb", allow_http=True, resolver=resolver)
    assert (dest.scheme, dest.port) == ("http", 80)
    dest, _ = check_destination("HTTPS://hooks.example.com/cb", resolver=resolver)  # https needs no opt-in
    assert dest.scheme == "https"
    with pytest.raises(BlockedDestination, match="http is not allowed"):
        check_scheme(parse_url("hTTp://hooks.example.com/"), allow_http=False)  # the scheme is case-insensitive
    check_scheme(parse_url("http://hooks.example.com/"), allow_http=True)


def test_a_hostname_resolving_to_a_private_address_is_refused() -> None:
    with pytest.raises(BlockedDestination, match=r"internal\.example\.com resolves to a refused address: 10\.2\.3\.4"):
        check_destination("https://internal.example.com/hook", resolver=resolver_for("10.2.3.4"))


def test_one_bad_answer_among_good_ones_is_enough_to_refuse() -> None:
    """An attacker controlling DNS must not win by adding one public address to a private one."""
    with pytest.raises(BlockedDestination, match="169.254.169.254"):
        check_destination("https://mixed.example.com/", resolver=resolver_for("93.184.216.34", "169.254.169.254"))


def test_public_answers_pass_ipv4_first() -> None:
    dest, addresses = check_destination("https://hooks.example.com:8443/cb?x=1",
                                        resolver=resolver_for("2606:2800:220:1::1", "93.184.216.34"))
    assert addresses == [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:2800:220:1::1")]
    assert (dest.scheme, dest.host, dest.port, dest.target, dest.host_header) == (
        "https", "hooks.example.com", 8443, "/cb?x=1", "hooks.example.com:8443")


def test_an_unresolvable_host_is_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)  # the default resolver is looked up per call
    with pytest.raises(UnresolvableHost, match="nowhere.example"):
        check_destination("https://nowhere.example/")
    with pytest.raises(UnresolvableHost):
        check_destination("https://empty.example/", resolver=resolver_for())


@pytest.mark.parametrize(("url", "message"), [
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://example.com/", "scheme 'gopher'"),
    ("example.com/hook", "scheme"),
    ("https://user:pass@example.com/", "credentials"),
    ("https://user@example.com/", "credentials"),
    ("https://example.com/#frag", "fragment"),
    ("https:///path-only", "no host"),
    ("https://example.com:0/", "port 0"),
    ("https://example.com:99999/", "cannot be parsed"),
    ("https://exa mple.com/", "spaces or control"),
    ("https://example.com/\x00", "spaces or control"),
    ("http://%31%32%37.0.0.1/", "percent-encoded"),
    ("", "empty"),
    ("https://example.com/" + "a" * 2100, "longer than 2048"),
])
def test_malformed_urls_are_refused_before_any_lookup(url: str, message: str) -> None:
    with pytest.raises(BlockedDestination, match=message):
        parse_url(url)


def test_idna_hosts_are_sent_in_ascii() -> None:
    dest = parse_url("https://bücher.example/hook")
    assert dest.host == "xn--bcher-kva.example" and dest.host_header == "xn--bcher-kva.example"


def test_ipv6_literals_keep_their_brackets_in_host() -> None:
    dest = parse_url("http://[2606:2800:220:1::1]:8080/x")
    assert (dest.host, dest.host_header, dest.port) == ("2606:2800:220:1::1", "[2606:2800:220:1::1]:8080", 8080)


class TestAllowPrivate:
    """The test-only flag admits loopback, RFC 1918 and ULA; never metadata or the odd ranges."""

    @pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.10", "fd12::1", "::ffff:127.0.0.1"])
    def test_admitted(self, address: str) -> None:
        assert refusal_reason(ipaddress.ip_address(address), allow_private=True) is None

    @pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "100.64.0.1",
                                         "fd00:ec2::254", "64:ff9b::a9fe:a9fe"])
    def test_still_refused(self, address: str) -> None:
        assert refusal_reason(ipaddress.ip_address(address), allow_private=True) is not None

    def test_resolution_with_the_flag(self) -> None:
        dest = parse_url("http://receiver.test:8080/hook")
        assert resolve_checked(dest, allow_private=True, resolver=resolver_for("127.0.0.1")) == [
            ipaddress.ip_address("127.0.0.1")]
        with pytest.raises(BlockedDestination):
            resolve_checked(dest, allow_private=False, resolver=resolver_for("127.0.0.1"))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_garbage_from_the_resolver_is_refused() -> None:
    def weird(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("not-an-ip", port))]

    with pytest.raises(BlockedDestination, match="not an IP address"):
        check_destination("https://weird.example/", resolver=weird)
