"""The upstream HTTP/1.1 client against raw asyncio servers that answer well, badly, slowly or not at all."""

from __future__ import annotations

import asyncio

import pytest
from tests.gateway.raw_servers import Handler, Server
from tests.gateway.raw_servers import read_request as _read_request

from corral.gateway.h1client import Disconnected, Pool, ProtocolError, split_url

JSON = b"Content-Type: application/json\r\n"


def keep_alive(body: bytes = b'{"ok":true}', close_on: int | None = None) -> Handler:
    """Answers every request on a connection; with close_on=k, closes unanswered at its k-th request."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        served = 0
        while True:
            await _read_request(reader)
            served += 1
            if close_on is not None and served == close_on:
                return
            writer.write(b"HTTP/1.1 200 OK\r\n" + JSON + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    return handler


async def _post(pool: Pool, url: str, body: bytes = b"{}", timeout_s: float = 5.0) -> tuple[int, bytes]:
    async with await pool.request(b"POST", url + "/v1/x", JSON, body, timeout_s) as response:
        return response.status, (await response.read_capped(1 << 30))[0]


def test_split_url_keeps_credentials_out_and_names_bad_urls() -> None:
    assert split_url("http://user:pw@h:8080/v1/a?b=1") == (("http", "h", 8080), b"/v1/a?b=1")
    assert split_url("https://h") == (("https", "h", 443), b"/")
    assert split_url("http://[::1]:9/x") == (("http", "::1", 9), b"/x")
    for bad in ("ftp://h/", "h:80/x", "http://h:99999/", "http:///x"):
        with pytest.raises(ValueError):
            split_url(bad)


async def test_requests_reuse_one_kept_alive_connection() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            seen.append(await _read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\n" + JSON + b"Content-Length: 2\r\n\r\n{}")

    async with Server(handler) as server:
        pool = Pool()
        for _ in range(5):
            assert await _post(pool, server.url, b'{"a":1}') == (200, b"{}")
        assert server.connections == 1 and pool.open_connections == 1
        pool.close()
    head = seen[0].decode()
    assert head.startswith("POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "Content-Length: 7\r\n" in head and head.endswith('{"a":1}')


async def test_chunked_and_until_close_bodies_are_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        if n == 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            await writer.drain()
            await _read_request(reader)  # the connection stays usable after a chunked answer
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
            await writer.drain()
            await reader.read()
        else:  # no length, no chunking: the body ends when the connection does
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nuntil close")
            await writer.drain()

    async with Server(handler) as server:
        pool = Pool()
        assert await _post(pool, server.url) == (200, b"abcde")
        assert await _post(pool, server.url) == (200, b"z")
        pool.close()
        response = await Pool().request(b"GET", server.url + "/", b"", b"", 5.0)
        assert response.content_type == "text/plain"
        assert await response.read() == b"until close"


async def test_a_kept_alive_connection_the_upstream_timed_out_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:  # closes a connection idle for 50 ms, as uvicorn does after 5 s
            try:
                await asyncio.wait_for(_read_request(reader), 0.05)
            except TimeoutError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\n" + JSON + b"Content-Length: 2\r\n\r\n{}")
            await writer.drain()

    async with Server(handler) as server:
        pool = Pool()
        for _ in range(3):  # each on a new connection: the loop saw the old one close
            assert (await _post(pool, server.url))[0] == 200
            await asyncio.sleep(0.2)
        assert server.connections == 3
        pool.close()


async def test_a_new_connection_closed_before_answering_is_an_error() -> None:
    async with Server(keep_alive(close_on=1)) as server:
        with pytest.raises(Disconnected):
            await _post(Pool(), server.url)
        assert server.connections == 1  # not retried: a fresh connection's request may have been handled


async def test_a_silent_upstream_times_out_and_its_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        if n == 2:  # head, part of the body, then silence
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
        await asyncio.sleep(30)

    async with Server(handler) as server:
        pool = Pool()
        with pytest.raises(TimeoutError):
            await _post(pool, server.url, timeout_s=0.2)
        response = await pool.request(b"POST", server.url + "/", b"", b"", 0.2)
        with pytest.raises(TimeoutError):
            await response.read()
        response.release()
        assert pool.open_connections == 0
        pool.close()


async def test_malformed_and_oversized_answers_are_protocol_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        if n == 1:
            writer.write(b"HTTQ/9 nonsense\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with Server(handler) as server:
        pool = Pool()
        with pytest.raises(ProtocolError, match="not valid HTTP"):
            await _post(pool, server.url)
        with pytest.raises(ProtocolError, match="KiB of headers"):
            await _post(pool, server.url)
        assert pool.open_connections == 0


async def test_a_large_body_streams_through_flow_control() -> None:
    body = bytes(range(256)) * 20_000  # 5 MB: reading pauses past the high-water mark and resumes

    async with Server(keep_alive(body)) as server:
        pool = Pool()
        response = await pool.request(b"POST", server.url + "/", JSON, b"{}", 5.0)
        received = bytearray()
        async for chunk in response.chunks():
            received += chunk
            await asyncio.sleep(0)
        response.release()
        assert bytes(received) == body
        assert await _post(pool, server.url) == (200, body)  # and the connection went back to the pool
        assert server.connections == 1
        pool.close()


async def test_the_connection_cap_queues_callers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with Server(handler) as server:
        pool = Pool(max_connections=2)
        answers = await asyncio.gather(*(_post(pool, server.url) for _ in range(8)))
        assert answers == [(200, b"ok")] * 8
        assert server.connections == 2
        pool.close()


async def test_a_cancelled_call_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        if n == 1:
            await asyncio.sleep(30)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    async with Server(handler) as server:
        pool = Pool()
        task = asyncio.ensure_future(_post(pool, server.url))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.open_connections == 0
        assert await _post(pool, server.url) == (200, b"ok")  # a new connection, not the abandoned one
        pool.close()


async def test_connect_failures_are_os_errors() -> None:
    async with Server(keep_alive()) as server:
        url = server.url
    with pytest.raises(OSError):
        await _post(Pool(), url)


async def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    async with Server(handler) as server:
        pool = Pool()
        assert await _post(pool, server.url) == (201, b"ok")
        assert await _post(pool, server.url) == (201, b"ok")
        assert server.connections == 1
        pool.close()
