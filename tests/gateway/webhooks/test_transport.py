"""The pinned POST: it connects to the checked address while Host, SNI and the certificate check
use the URL's name; a deadline bounds the whole attempt; redirects are answers, not hops."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
import pytest

from gateway.webhooks import transport
from gateway.webhooks.ssrf import IPAddress, parse_url
from gateway.webhooks.transport import TransportError, post
from tests.gateway.webhooks.receiver import QuietHTTPServer, Receiver, Reply, _handler

LOOPBACK: list[IPAddress] = [ipaddress.ip_address("127.0.0.1")]


def test_the_connection_goes_to_the_pinned_address_with_the_urls_host_header(receiver: Receiver) -> None:
    dest = parse_url(f"http://receiver.test:{receiver.port}/hook?x=1")  # a name nothing could resolve
    answer = post(dest, LOOPBACK, b'{"a":1}', {"content-type": "application/json"}, timeout=5)
    assert (answer.status, answer.ip, answer.excerpt) == (200, "127.0.0.1", "ok")
    (request,) = receiver.requests
    assert request.headers["host"] == f"receiver.test:{receiver.port}"
    assert (request.path, request.body) == ("/hook?x=1", b'{"a":1}')


def test_the_next_checked_address_is_tried_when_one_refuses(receiver: Receiver) -> None:
    dest = parse_url(f"http://receiver.test:{receiver.port}/hook")
    addresses = [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")]
    answer = post(dest, addresses, b"{}", {}, timeout=5)  # nothing listens on .2  # nothing listens on .2
    assert answer.status == 200 and answer.ip == "127.0.0.1"


def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening
        with pytest.raises(TransportError) as exc:
            post(parse_url(f"http://receiver.test:{port}/"), LOOPBACK, b"{}", {}, timeout=5)
    assert exc.value.kind == "connect"


def test_a_redirect_is_returned_not_followed(receiver: Receiver) -> None:
    receiver.answer_with([Reply(307, headers=(("Location", f"http://127.0.0.1:{receiver.port}/next"),))])
    answer = post(parse_url(receiver.url), LOOPBACK, b"{}", {}, timeout=5)
    assert answer.status == 307
    time.sleep(0.2)
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_only_the_first_kilobyte_of_the_answer_is_read(receiver: Receiver) -> None:
    receiver.answer_with([Reply(500, body=b"x" * 1_000_000)])
    answer = post(parse_url(receiver.url), LOOPBACK, b"{}", {}, timeout=5)
    assert answer.status == 500 and answer.excerpt == "x" * transport.MAX_EXCERPT


def test_a_slow_answer_times_out(receiver: Receiver) -> None:
    receiver.answer_with([Reply(200, delay=3)])
    started = time.monotonic()
    with pytest.raises(TransportError) as exc:
        post(parse_url(receiver.url), LOOPBACK, b"{}", {}, timeout=0.5)
    assert exc.value.kind == "timeout" and time.monotonic() - started < 2.0


def test_a_receiver_dripping_bytes_cannot_outlast_the_deadline() -> None:
    """Each byte arrives well within a socket timeout; only the whole-attempt deadline stops it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
            if stop.is_set():
                break
            try:
                conn.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        conn.close()

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(TransportError) as exc:
            post(parse_url(f"http://drip.test:{port}/"), LOOPBACK, b"{}", {}, timeout=1.0)
        assert exc.value.kind == "timeout"
        assert time.monotonic() - started < 2.5
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# -- TLS: SNI and the certificate check use the URL's host name, not the pinned IP ------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=receiver.test", "-addext", "subjectAltName=DNS:receiver.test"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path]) -> Iterator[tuple[Receiver, list[str | None]]]:
    cert, key = certificate
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)  # type: ignore[assignment,return-value]
    receiver = Receiver("", 0)
    server = QuietHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    receiver.url = f"https://receiver.test:{receiver.port}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver, server_names
    finally:
        server.shutdown()
        server.server_close()


def trust(monkeypatch: pytest.MonkeyPatch, cert: Path) -> None:
    monkeypatch.setattr(transport, "_ssl_context", lambda: ssl.create_default_context(cafile=str(cert)))


def test_https_to_a_pinned_ip_uses_the_host_name_for_sni_and_the_certificate(
    tls_receiver: tuple[Receiver, list[str | None]], certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, server_names = tls_receiver
    trust(monkeypatch, certificate[0])
    answer = post(parse_url(receiver.url), LOOPBACK, b"{}", {}, timeout=5)
    assert answer.status == 200
    assert server_names == ["receiver.test"]
    assert receiver.requests[0].headers["host"] == f"receiver.test:{receiver.port}"


def test_https_certificate_for_another_name_is_refused(
    tls_receiver: tuple[Receiver, list[str | None]], certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, _ = tls_receiver
    trust(monkeypatch, certificate[0])
    with pytest.raises(TransportError) as exc:
        post(parse_url(f"https://impostor.test:{receiver.port}/hook"), LOOPBACK, b"{}", {}, timeout=5)
    assert exc.value.kind == "tls"
    assert receiver.requests == []


def test_https_with_an_untrusted_certificate_is_refused(tls_receiver: tuple[Receiver, list[str | None]]) -> None:
    receiver, _ = tls_receiver
    with pytest.raises(TransportError) as exc:
        post(parse_url(receiver.url), LOOPBACK, b"{}", {}, timeout=5)
    assert exc.value.kind == "tls" and receiver.requests == []
