"""Keep-alive HTTP/1.1 connections to one upstream for an event loop (`benchbridge serve`), on httptools.

Why not aiohttp: at 32 requests in flight the event loop's CPU per request decides the throughput, and
aiohttp's client took ~0.9 ms of it per request where this takes ~0.1 ms (measured with
`benchmarks/model_layer.py`: serve at 32 clients went from 0.69-0.83 to 0.86-0.89 of the ideal). An
OpenAI-compatible upstream needs little of HTTP: one POST at a time per connection, a JSON body with a
Content-Length, an answer with a Content-Length or chunked (httptools, the C parser uvicorn uses, reads
both). The connection settings (TLS, the proxy from `HTTP(S)_PROXY` / `NO_PROXY`, a CONNECT tunnel for
https through a proxy, timeouts, idle reuse) are `HTTPPool`'s, so both transports ask the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import httptools

from bridges.models._http import IDLE_REUSE_S, HTTPPool, HTTPResult, authority

__all__ = ["AsyncHTTPPool", "UpstreamProtocolError"]


class UpstreamProtocolError(ConnectionError):
    """The upstream's bytes are not an HTTP/1.1 response, or the connection ended in the middle of one."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request is written whole, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.keep_alive = False
        self.last_used = time.monotonic()
        self._waiter: asyncio.Future[HTTPResult] | None = None
        self._headers: dict[str, str] = {}
        self._headers_done = False
        self._body: list[bytes] = []
        self._tunnel: bytes | None = None  # the CONNECT answer's bytes while a tunnel is being opened

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection is a stream transport

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"unreadable HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if exc is None and self._headers_done and waiter is not None and not waiter.done():
            if "content-length" not in self._headers and "transfer-encoding" not in self._headers:
                # A body without a length ends where the connection does (RFC 9112 6.3, last rule).
                self.keep_alive = False
                waiter.set_result(HTTPResult(self.parser.get_status_code(), self._headers, b"".join(self._body)))
                return
        self._fail(UpstreamProtocolError(f"the upstream closed the connection{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._headers_done, self._body = {}, False, []  # a fresh dict: the last result keeps its own
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection's state is unknown, never reuse it

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return  # an interim answer (103 Early Hints): the response follows it on the same connection
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(HTTPResult(self.parser.get_status_code(), self._headers, b"".join(self._body)))

    # requests
    async def exchange(self, request: bytes) -> HTTPResult:
        """Writes one request and waits for its whole response."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.keep_alive = False
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    async def open_tunnel(self, request: bytes) -> None:
        """Sends a CONNECT and waits for the proxy's answer; a refusal is raised as an `OSError` naming its
        status, as `http.client` does."""
        assert self.transport is not None
        self._tunnel = b""
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            await self._waiter
        finally:
            self._waiter, self._tunnel = None, None

    def _tunnel_data(self, data: bytes) -> None:
        self._tunnel = cast(bytes, self._tunnel) + data
        end = self._tunnel.find(b"\r\n\r\n")
        if end < 0:
            if len(self._tunnel) > 65536:
                self._fail(UpstreamProtocolError("the proxy's answer to CONNECT has no end"))
            return
        status_line = self._tunnel[: self._tunnel.find(b"\r\n")].decode("latin-1")
        parts = status_line.split(" ", 2)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            waiter.set_exception(UpstreamProtocolError(f"unreadable answer to CONNECT: {status_line!r}"))
        elif parts[1] != "200":
            waiter.set_exception(OSError(f"Tunnel connection failed: {' '.join(parts[1:])}"))
        else:
            waiter.set_result(HTTPResult(200, {}, b""))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class AsyncHTTPPool:
    """At most `pool.size` idle connections to `pool`'s upstream, for the event loop that uses it."""

    def __init__(self, pool: HTTPPool) -> None:
        self.pool = pool
        self.idle: list[_Connection] = []
        self.host_header = authority(pool.host, pool.port)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> HTTPResult:
        """One POST within the pool's timeout. Raises `OSError` (a refused, dropped or unreadable connection,
        `socket.gaierror` and `ssl.SSLCertVerificationError` included) or `TimeoutError`."""
        pool = self.pool
        head = [f"POST {pool.request_target(path)} HTTP/1.1", f"Host: {self.host_header}"]
        head.append(f"Content-Length: {len(body)}")
        head += [f"{name}: {value}" for name, value in {**headers, **pool.request_proxy_headers()}.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(pool.timeout_s):
                conn = self._take() or await self._connect()
                result = await conn.exchange(request)
        except BaseException:  # cancelled or failed mid-request: its answer must not reach the next request
            if conn is not None:
                conn.close()
            raise
        if conn.keep_alive and not conn.closed and len(self.idle) < pool.size:
            conn.last_used = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()
        return result

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.last_used < IDLE_REUSE_S:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        pool = self.pool
        loop = asyncio.get_running_loop()
        if pool.proxy is None:
            if pool.https:
                _, conn = await loop.create_connection(
                    _Connection, pool.host, pool.port, ssl=pool.context, server_hostname=pool.host
                )
            else:
                _, conn = await loop.create_connection(_Connection, pool.host, pool.port)
            return conn
        proxy_host, proxy_port = pool.proxy.hostname or "", pool.proxy.port or 80
        transport, conn = await loop.create_connection(_Connection, proxy_host, proxy_port)
        if not pool.https:
            return conn
        try:  # a CONNECT tunnel through the proxy, TLS to the upstream inside it
            head = [f"CONNECT {self.host_header} HTTP/1.1", f"Host: {self.host_header}"]
            head += [f"{name}: {value}" for name, value in pool.proxy_headers().items()]
            await conn.open_tunnel(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            tls_transport = await loop.start_tls(transport, conn, pool.context, server_hostname=pool.host)  # type: ignore[arg-type]
        except BaseException:
            transport.close()
            raise
        if tls_transport is None:
            raise UpstreamProtocolError("the tunnel closed during the TLS handshake")
        conn.transport = tls_transport
        return conn

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
