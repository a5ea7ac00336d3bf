"""Keep-alive HTTP/1.1 connections to one upstream for an event loop (`benchbridge serve`).

Why not aiohttp: at 32 requests in flight the event loop's CPU per request decides the throughput, and
aiohttp's client took ~0.9 ms of it per request where this takes ~0.1 ms (measured with
`benchmarks/model_layer.py`: serve at 32 clients went from 0.69-0.83 to 0.86-0.89 of the ideal). The
request bytes, the response parser (`ResponseReader`, on httptools) and the connection settings (TLS, the
proxy from `HTTP(S)_PROXY` / `NO_PROXY`, a CONNECT tunnel for https through a proxy, timeouts, idle reuse)
are `_http`'s, so both transports ask and read the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from bridges.models._http import (
    IDLE_REUSE_S,
    HTTPPool,
    HTTPResult,
    ResponseReader,
    UpstreamProtocolError,
    tunnel_answer,
)

__all__ = ["AsyncHTTPPool", "UpstreamProtocolError"]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request is written whole, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.closed = False
        self.last_used = time.monotonic()
        self._waiter: asyncio.Future[HTTPResult] | None = None
        self._tunnel: bytes | None = None  # the CONNECT answer's bytes while a tunnel is being opened

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection is a stream transport

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: never reuse this connection
            self.close()
            return
        try:
            if self._tunnel is not None:
                self._tunnel += data
                if tunnel_answer(self._tunnel):
                    waiter.set_result(HTTPResult(200, {}, b""))
            elif self.reader.feed(data):
                waiter.set_result(self.reader.result())
        except OSError as exc:  # unreadable, or a refused tunnel
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is not None or self._tunnel is not None:
            self._fail(UpstreamProtocolError(f"the upstream closed the connection{f': {exc}' if exc else ''}"))
            return
        try:
            self.reader.at_eof()
        except UpstreamProtocolError as cut_off:
            self._fail(cut_off)
        else:
            waiter.set_result(self.reader.result())

    # requests
    async def exchange(self, request: bytes) -> HTTPResult:
        """Writes one request and waits for its whole response."""
        assert self.transport is not None
        self.reader.start()
        return await self._send(request)

    async def open_tunnel(self, request: bytes) -> None:
        """Sends a CONNECT and waits for the proxy's 200 (anything else raises, see `tunnel_answer`)."""
        self._tunnel = b""
        try:
            await self._send(request)
        finally:
            self._tunnel = None

    async def _send(self, request: bytes) -> HTTPResult:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None

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

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> HTTPResult:
        """One POST within the pool's timeout. Raises `OSError` (a refused, dropped or unreadable connection,
        `socket.gaierror` and `ssl.SSLCertVerificationError` included) or `TimeoutError`."""
        request = self.pool.request_bytes(path, body, headers)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.pool.timeout_s):
                conn = self._take() or await self._connect()
                result = await conn.exchange(request)
        except BaseException:  # cancelled or failed mid-request: its answer must not reach the next request
            if conn is not None:
                conn.close()
            raise
        if conn.reader.reusable and not conn.closed and len(self.idle) < self.pool.size:
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
        host, port = pool.address()
        if pool.context is None:  # plain http, to the upstream or to the proxy (which gets the absolute URL)
            _, conn = await loop.create_connection(_Connection, host, port)
            return conn
        if pool.proxy is None:
            _, conn = await loop.create_connection(_Connection, host, port, ssl=pool.context, server_hostname=host)
            return conn
        transport, conn = await loop.create_connection(_Connection, host, port)
        try:  # a CONNECT tunnel through the proxy, TLS to the upstream inside it
            await conn.open_tunnel(pool.connect_request())
            tls_transport = await loop.start_tls(transport, conn, pool.context, server_hostname=pool.host)
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
