"""The upstream HTTP/1.1 client's edge cases: a review's findings, each as the behaviour it should have."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import pathlib
import socket
import ssl
import struct
from collections.abc import Callable

import pytest
from tests.gateway.raw_servers import Handler, Server
from tests.gateway.raw_servers import read_request as _read_request

from corral.errors import PermissionDeniedError
from corral.gateway import h1conn
from corral.gateway.h1client import Disconnected, Pool, ProtocolError, split_url
from corral.gateway.upstream import Endpoint, KeyEnvPolicy, UpstreamFailure, UpstreamPool

JSON = b"Content-Type: application/json\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def serve_ok() -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            writer.write(OK)
            await writer.drain()

    return handler


async def _post(pool: Pool, url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    async with await pool.request(b"POST", url + "/v1/x", JSON, b"{}", timeout_s) as response:
        return response.status, await response.read()


async def _until(condition: Callable[[], bool], tries: int = 200) -> bool:
    for _ in range(tries):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def _watch_lost(monkeypatch: pytest.MonkeyPatch) -> list[h1conn.Connection]:
    """Connections whose transport really closed (connection_lost ran), in order."""
    lost: list[h1conn.Connection] = []
    original = h1conn.Connection.connection_lost

    def connection_lost(self: h1conn.Connection, exc: Exception | None) -> None:
        lost.append(self)
        original(self, exc)

    monkeypatch.setattr(h1conn.Connection, "connection_lost", connection_lost)
    return lost


async def test_a_post_the_upstream_received_and_handled_is_not_sent_again() -> None:
    """A reused connection that closes after the upstream read the request: the POST may have been run."""
    handled: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            handled.append(n)
            if len(handled) == 2:  # handles the request (a generation, a tool call), then the worker dies
                await asyncio.sleep(0.05)
                return
            writer.write(OK)
            await writer.drain()

    async with Server(handler) as server:
        pool = Pool()
        assert await _post(pool, server.url) == (200, b"ok")
        with pytest.raises(Disconnected):
            await _post(pool, server.url)
        assert handled == [1, 1]  # not [1, 1, 2]: sent once; the proxy's own retries decide the rest
        pool.close()


async def test_an_idempotent_request_on_a_stale_connection_is_replayed_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(OK)
        await writer.drain()
        await _read_request(reader)  # the second request on each connection: closed unanswered

    async with Server(handler) as server:
        pool = Pool()
        for _ in range(3):
            response = await pool.request(b"GET", server.url + "/v1/models", b"", b"", 5.0)
            assert (response.status, await response.read()) == (200, b"ok")
            response.release()
        assert server.connections == 3
        pool.close()


async def test_a_cancelled_waiter_passes_its_slot_to_the_next() -> None:
    """At the cap, a slot given to a caller that is cancelled before it runs must go to the next one."""
    async with Server(serve_ok()) as server:
        pool = Pool(max_connections=1)
        held = await pool.request(b"POST", server.url + "/", JSON, b"{}", 5.0)
        assert await held.read() == b"ok"
        first = asyncio.ensure_future(_post(pool, server.url))
        second = asyncio.ensure_future(_post(pool, server.url, timeout_s=2.0))
        await asyncio.sleep(0.05)  # both wait for a slot
        held.release()  # wakes `first`...
        first.cancel()  # ...whose client went away before it ran
        assert await second == (200, b"ok")  # not TimeoutError("no upstream connection came free")
        with pytest.raises(asyncio.CancelledError):
            await first
        pool.close()


async def test_a_cancelled_read_of_a_retryable_answer_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 20\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(30)  # the rest of the error body is slow

    async with Server(handler) as server:
        upstream = UpstreamPool()
        endpoint = Endpoint("e", [server.url], "m", timeout_s=5.0)
        task = asyncio.ensure_future(upstream.open(endpoint, 0, "/v1/x", b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()  # the gateway's client disconnected while the 503's body was being read
        with pytest.raises(asyncio.CancelledError):
            await task
        assert upstream.pool.open_connections == 0  # not held forever, a slot and a descriptor gone
        await upstream.close()


async def test_giving_up_on_an_upstream_that_does_not_read_closes_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transport.close() waits to flush the unsent request: the socket stayed open, uncounted, forever."""
    lost = _watch_lost(monkeypatch)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(30)  # accepts, never reads

    async with Server(handler) as server:
        pool = Pool()
        body = b"x" * (32 << 20)  # more than the socket buffers hold
        with pytest.raises(TimeoutError):
            await pool.request(b"POST", server.url + "/", JSON, body, 0.3)
        assert pool.open_connections == 0
        assert await _until(lambda: len(lost) == 1)
        pool.close()


async def test_an_endless_header_line_is_refused_at_the_head_limit() -> None:
    """httptools holds a header until its line ends: the 64 KiB limit must count bytes, not headers."""
    sent: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        for _ in range(64):  # 16 MiB of one header value, then silence
            writer.write(b"a" * (256 << 10))
            await writer.drain()
            sent.append(1)
        await asyncio.sleep(30)

    async with Server(handler) as server:
        pool = Pool()
        with pytest.raises(ProtocolError, match="KiB of headers"):
            await _post(pool, server.url, timeout_s=3.0)
        assert len(sent) < 64  # refused early, not after buffering it all
        pool.close()


async def test_a_reset_ends_an_until_close_body_with_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {"a"')
        await writer.drain()
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST: the upstream crashed mid-answer

    async with Server(handler) as server:
        pool = Pool()
        response = await pool.request(b"POST", server.url + "/", JSON, b"{}", 5.0)
        with pytest.raises(ConnectionError):
            await response.read()  # a reset is not the end of the body
        response.release()
        pool.close()


async def test_idle_connections_are_closed_after_the_keepalive() -> None:
    async with Server(serve_ok()) as server:
        pool = Pool(keepalive_s=0.1)
        assert await asyncio.gather(_post(pool, server.url), _post(pool, server.url)) == [(200, b"ok")] * 2
        assert pool.open_connections == 2
        assert await _until(lambda: pool.open_connections == 0)  # no further call to this origin needed
        assert await _until(lambda: server.closed == 2)
        pool.close()


async def test_an_answer_nobody_asked_for_makes_the_connection_unusable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nst")  # and half of a second answer
        await writer.drain()
        while True:
            await _read_request(reader)
            writer.write(OK)
            await writer.drain()

    async with Server(handler) as server:
        pool = Pool()
        response = await pool.request(b"POST", server.url + "/", JSON, b"{}", 5.0)
        await asyncio.sleep(0.05)  # the extra bytes arrive before the caller is done with its answer
        assert await response.read() == b"ok"
        response.release()
        assert await _post(pool, server.url) == (200, b"ok")  # on a new connection, not a ProtocolError
        assert server.connections == 2
        pool.close()


async def test_the_answer_to_head_has_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            await writer.drain()

    async with Server(handler) as server:
        pool = Pool()
        response = await pool.request(b"HEAD", server.url + "/", b"", b"", 2.0)
        assert (response.status, await response.read()) == (200, b"")  # not TimeoutError
        response.release()
        pool.close()


async def test_an_api_key_with_a_line_break_is_not_sent_as_a_broken_head() -> None:
    """A key from a file-backed secret often ends in a newline; a CR/LF in a header splits the request."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            heads.append(await _read_request(reader))
            writer.write(OK)
            await writer.drain()

    async with Server(handler) as server:
        upstream = UpstreamPool()
        for key in ("sk-abc\n", "sk-abc\r\nX-Injected: 1"):
            try:
                endpoint = Endpoint("e", [server.url], "m", api_key=key)
                response = await upstream.open(endpoint, 0, "/v1/x", b"{}")
                response.release()
            except (ValueError, UpstreamFailure):
                continue  # refused with a clear error: fine
        for head in heads:
            lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            assert all(b"\n" not in line and b"\r" not in line for line in lines)
            assert not any(line.lower().startswith(b"x-injected") for line in lines)
        await upstream.close()


def test_a_key_variable_holding_a_line_break_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = KeyEnvPolicy()
    monkeypatch.setenv("CORRAL_UPSTREAM_A", "sk-abc\n")
    assert policy.read("CORRAL_UPSTREAM_A") == "sk-abc"
    monkeypatch.setenv("CORRAL_UPSTREAM_A", "sk-abc\r\nX-Injected: 1")
    with pytest.raises(PermissionDeniedError, match="line break"):
        policy.read("CORRAL_UPSTREAM_A")


def test_a_request_target_is_escaped_where_raw_bytes_would_break_the_request_line() -> None:
    assert split_url("http://h/v1 beta/é?q=a b#frag")[1] == b"/v1%20beta/%C3%A9?q=a%20b"
    assert split_url("http://h/v1\r\nX-Injected: 1")[1] == b"/v1%0D%0AX-Injected:%201"
    assert split_url("http://h/v1/a%2Fb?x=1&y=[2]")[1] == b"/v1/a%2Fb?x=1&y=[2]"  # escapes kept as they are


async def test_bodiless_and_closing_answers_leave_the_pool_in_a_good_state() -> None:
    answers = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",  # the length of what is not sent
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while answers:
            await _read_request(reader)
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                return

    async with Server(handler) as server:
        pool = Pool()
        got = [await _post(pool, server.url) for _ in range(5)]
        assert got == [(204, b""), (304, b""), (200, b"ok"), (200, b"ok"), (200, b"ok")]
        assert server.connections == 2  # kept alive through 204, 304 and HTTP/1.0 keep-alive; not after close
        pool.close()


async def test_bytes_on_an_idle_connection_retire_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            writer.write(OK)
            await writer.drain()
            if n == 1:
                await asyncio.sleep(0.02)
                writer.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")  # then idle

    async with Server(handler) as server:
        pool = Pool()
        assert await _post(pool, server.url) == (200, b"ok")
        assert await _until(lambda: pool.open_connections == 0)
        assert await _post(pool, server.url) == (200, b"ok")
        assert server.connections == 2
        pool.close()


async def test_an_ipv6_literal_origin_is_reached() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_request(reader)
        writer.write(OK if b"\r\nHost: [::1]:" in head else b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(handler, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with server:
        pool = Pool()
        assert await _post(pool, f"http://[::1]:{server.sockets[0].getsockname()[1]}") == (200, b"ok")
        pool.close()


def _tls_contexts(tmp_path: pathlib.Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts around a throwaway self-signed certificate for localhost and 127.0.0.1."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, ssl.create_default_context(cadata=cert_pem.decode())


async def test_an_https_origin_is_verified_by_name_or_address_and_kept_alive(tmp_path: pathlib.Path) -> None:
    server_tls, client_tls = _tls_contexts(tmp_path)
    served: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            served.append(1)
            writer.write(OK)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    async with server:
        pool = Pool()
        pool._ssl = client_tls  # the pool's own context trusts only the system's authorities
        for host in ("localhost", "127.0.0.1", "localhost"):
            assert await _post(pool, f"https://{host}:{port}") == (200, b"ok")
        assert pool.open_connections == 2  # one per origin, the second call to localhost reused its own
        pool.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await _post(Pool(), f"https://localhost:{port}")  # an unknown authority is refused
    assert len(served) == 3
