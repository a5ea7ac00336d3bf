"""Both HTTP clients of the model layer (`HTTPPool` for threads, `AsyncHTTPPool` for an event loop) against
scripted servers: the response framings an upstream may use, keep-alive reuse, and what a dropped, closed,
silent or cancelled exchange leaves behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bridges._errors import BenchbridgeError
from bridges.models._async_http import AsyncHTTPPool, UpstreamProtocolError
from bridges.models._http import HTTPPool, HTTPResult

# Gets the server's request number (from 1) and the request; returns False to end the connection.
Handler = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


class ScriptedServer:
    """Reads each request whole (head and Content-Length body) and lets `handler` answer it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # set when a connection ends, whoever ended it

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.handler(len(self.requests), request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()


class Client:
    """One transport's pool, driven from the test's event loop (the thread's client through a worker thread)."""

    def __init__(self, transport: str, port: int, timeout_s: float) -> None:
        self.sync = HTTPPool(f"http://127.0.0.1:{port}/v1", size=4, timeout_s=timeout_s)
        self.loop_pool = AsyncHTTPPool(self.sync) if transport == "event loop" else None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> HTTPResult:
        if self.loop_pool is not None:
            return await self.loop_pool.post(path, body, headers)
        return await asyncio.to_thread(self.sync.post, path, body, headers)

    @property
    def idle(self) -> list:
        return self.loop_pool.idle if self.loop_pool is not None else self.sync.idle

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


TRANSPORTS = ["threads", "event loop"]
transports = pytest.mark.parametrize("transport", TRANSPORTS)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


@transports
def test_a_post_sends_the_request_line_host_and_body_and_reuses_the_connection(transport: str) -> None:
    async def handler(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b'{"n": %d}' % len(request), b"Retry-After: 3\r\n"))
        return True

    async def main() -> None:
        async with ScriptedServer(handler) as server:
            pool = Client(transport, server.port, 5.0)
            first = await pool.post("/chat/completions", b'{"q": 1}', {"Authorization": "Bearer k"})
            second = await pool.post("/chat/completions", b'{"q": 2}', {"Authorization": "Bearer k"})
            pool.close()
        head, body = server.requests[0].split(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
        assert {f"Host: 127.0.0.1:{server.port}", "Content-Length: 8", "Authorization: Bearer k"} <= set(lines)
        assert body == b'{"q": 1}'
        assert (first.status, first.data) == (200, b'{"n": %d}' % len(server.requests[0]))
        assert first.headers.get("retry-after") == "3" and second.status == 200
        assert server.connections == 1  # the second request went on the first one's connection

    asyncio.run(main())


@transports
def test_chunked_and_close_delimited_bodies_are_read_whole(transport: str) -> None:
    async def chunked(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the body arrives in two segments
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        return True

    async def close_delimited(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b" 1}")
        return False  # the end of the connection is the end of the body

    async def main() -> None:
        async with ScriptedServer(chunked) as server:
            pool = Client(transport, server.port, 5.0)
            assert (await pool.post("/x", b"{}", {})).data == b"hello world"
            assert (await pool.post("/x", b"{}", {})).data == b"hello world"
            assert server.connections == 1
            pool.close()
        async with ScriptedServer(close_delimited) as server:
            pool = Client(transport, server.port, 5.0)
            assert (await pool.post("/x", b"{}", {})).data == b'{"a": 1}'
            assert pool.idle == []  # a connection that ended is not kept
            assert (await pool.post("/x", b"{}", {})).data == b'{"a": 1}'
            assert server.connections == 2

    asyncio.run(main())


@transports
def test_a_response_cut_off_or_unreadable_is_a_connection_error_and_the_next_post_reconnects(transport: str) -> None:
    async def handler(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            return False
        if n == 2:
            writer.write(b"SMTP ready\r\n\r\n")
            return True
        writer.write(answer(b"ok"))
        return True

    async def main() -> None:
        async with ScriptedServer(handler) as server:
            pool = Client(transport, server.port, 5.0)
            with pytest.raises(UpstreamProtocolError, match="closed the connection"):
                await pool.post("/x", b"{}", {})
            with pytest.raises(UpstreamProtocolError, match="unreadable HTTP response"):
                await pool.post("/x", b"{}", {})
            assert (await pool.post("/x", b"{}", {})).data == b"ok"
            assert server.connections == 3 and len(pool.idle) == 1
            pool.close()
        assert issubclass(UpstreamProtocolError, OSError)  # the backend retries it like a refused connection

    asyncio.run(main())


@transports
def test_a_silent_upstream_times_out_and_its_connection_is_not_reused(transport: str) -> None:
    async def silent(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        return True  # reads the next request, never answers this one

    async def main() -> None:
        async with ScriptedServer(silent) as server:
            pool = Client(transport, server.port, 0.3)
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await pool.post("/x", b"{}", {})
            assert 0.25 < asyncio.get_running_loop().time() - started < 2.0
            await asyncio.wait_for(server.closed.wait(), 5)  # its answer can never reach a later request
            assert pool.idle == []

    asyncio.run(main())


def test_a_cancelled_post_closes_its_connection() -> None:
    async def silent(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        return True

    async def main() -> None:
        async with ScriptedServer(silent) as server:
            pool = Client("event loop", server.port, 5.0)
            task = asyncio.create_task(pool.post("/x", b"{}", {}))
            while not server.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(server.closed.wait(), 5)
            assert pool.idle == []

    asyncio.run(main())


@transports
def test_a_connection_the_server_closed_or_wrote_to_while_idle_is_not_reused(transport: str) -> None:
    """A server may close a keep-alive connection whenever it likes, or send what nobody asked for: the next
    request goes on a new connection instead of failing, or reading another request's answer."""

    async def handler(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:  # an interim answer first, then the response; then the connection ends
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(b"one"))
            return False
        writer.write(answer(b"two"))
        if n == 2:  # and later, unasked, a response nobody waits for
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(answer(b"stray"))
        return True

    async def main() -> None:
        async with ScriptedServer(handler) as server:
            pool = Client(transport, server.port, 5.0)
            first = await pool.post("/x", b"{}", {})
            assert (first.status, first.data, first.headers.get("link")) == (200, b"one", None)
            await asyncio.wait_for(server.closed.wait(), 5)
            await asyncio.sleep(0.05)  # the server's FIN reaches the client
            assert (await pool.post("/x", b"{}", {})).data == b"two"
            await asyncio.sleep(0.2)  # the stray answer arrives on the idle connection
            assert (await pool.post("/x", b"{}", {})).data == b"two"
            assert server.connections == 3
            pool.close()

    asyncio.run(main())


@transports
def test_a_refused_connection_is_an_os_error(transport: str) -> None:
    async def main() -> None:
        async with ScriptedServer(lambda n, r, w: asyncio.sleep(0, True)) as server:
            port = server.port
        with pytest.raises(OSError):
            await Client(transport, port, 5.0).post("/x", b"{}", {})

    asyncio.run(main())


@transports
def test_what_a_hostile_or_odd_upstream_sends_is_refused_or_contained(transport: str) -> None:
    """A 101, a head that never ends, trailers, and non-HTTP bytes after a whole response."""

    async def handler(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        elif n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (200 * 1024))  # and the head goes on
            await writer.drain()
            await asyncio.sleep(30)
        elif n == 3:  # trailers may not change the head's headers
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 1\r\nTrailer: Retry-After\r\n\r\n"
            )
            writer.write(b"2\r\nok\r\n0\r\nRetry-After: 999\r\n\r\n")
        else:  # a whole response, then bytes that are not HTTP in the same write
            writer.write(answer(b"fine") + b"garbage that is not a response\r\n\r\n")
        return n != 2

    async def main() -> None:
        async with ScriptedServer(handler) as server:
            pool = Client(transport, server.port, 10.0)
            with pytest.raises(UpstreamProtocolError, match="switched protocols"):
                await pool.post("/x", b"{}", {})
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamProtocolError, match="response head larger than 65536 bytes"):
                await pool.post("/x", b"{}", {})
            assert asyncio.get_running_loop().time() - started < 5  # refused as it arrives, not at the timeout
            trailed = await pool.post("/x", b"{}", {})
            assert (trailed.data, trailed.headers.get("retry-after")) == (b"ok", "1")
            assert (await pool.post("/x", b"{}", {})).data == b"fine"
            assert pool.idle == []  # the connection after the garbage is not reused
            pool.close()

    asyncio.run(main())


def test_the_host_header_and_the_base_url_path() -> None:
    assert HTTPPool("http://example.test/v1", 1, 5).host_header == "example.test"
    assert HTTPPool("https://example.test:443/v1", 1, 5).host_header == "example.test"
    assert HTTPPool("https://[::1]/v1", 1, 5).host_header == "[::1]"
    assert HTTPPool("http://example.test:8080/v1", 1, 5).host_header == "example.test:8080"
    assert HTTPPool("https://[::1]:8443", 1, 5).host_header == "[::1]:8443"
    with pytest.raises(BenchbridgeError, match="a space or control character in the path"):
        HTTPPool("http://example.test/v1 X/", 1, 5)
