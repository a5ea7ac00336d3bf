"""Keep-alive HTTP(S) connections to one upstream, on the standard library's `http.client`.

Why not httpx or urllib3: at 32 requests in flight (640 requests/s against a 50 ms upstream)
the client's CPU per request decides the throughput, all threads sharing one GIL. Measured on
this project's 2-core machine, per request: httpx 1.2 ms, urllib3 0.65 ms, `http.client` with
this pool 0.4 ms (layer included). `http.client` already does the HTTP (chunked bodies,
keep-alive, TLS); this module only keeps connections for reuse and honours the usual
`HTTP(S)_PROXY` / `NO_PROXY` variables. An event loop (`benchbridge serve`) uses `_async_http`
instead, with the connection settings (TLS context, proxy, timeout, pool size) this module chose.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

from bridges._errors import BenchbridgeError

# Servers close idle keep-alive connections (uvicorn after 5 s); older ones are not reused.
IDLE_REUSE_S = 4.0


class Headers(Protocol):
    """Response headers, looked up case-insensitively (`http.client.HTTPMessage`, or a dict of lower-case names)."""

    def get(self, name: str, /) -> str | None: ...


@dataclass
class HTTPResult:
    status: int
    headers: Headers
    data: bytes


def authority(host: str, port: int) -> str:
    """`host:port` for a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HTTPPool:
    """At most `size` idle connections to the origin of `base_url`; one connection per request in flight."""

    def __init__(self, base_url: str, size: int, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BenchbridgeError(f"base_url: {base_url!r} is not an http(s) URL")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.size = size
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context() if self.https else None
        proxy = urllib.request.getproxies().get(parts.scheme)
        self.proxy = urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(self.host) else None
        self.idle: list[tuple[float, http.client.HTTPConnection]] = []
        self.lock = threading.Lock()

    def request_proxy_headers(self) -> dict[str, str]:
        """Headers a request itself carries for the proxy: a plain-HTTP request through it (an https one
        authenticates on its CONNECT instead)."""
        return self.proxy_headers() if self.proxy is not None and not self.https else {}

    def proxy_headers(self) -> dict[str, str]:
        if self.proxy is None or not self.proxy.username:
            return {}
        user_pass = f"{unquote(self.proxy.username)}:{unquote(self.proxy.password or '')}"
        return {"Proxy-Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}

    def _connect(self) -> http.client.HTTPConnection:
        if self.proxy is None:
            if self.https:
                return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self.context)
            return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        proxy_host, proxy_port = self.proxy.hostname or "", self.proxy.port or 80
        if self.https:  # a CONNECT tunnel through the proxy, TLS to the upstream inside it
            conn = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=self.timeout_s, context=self.context)
            conn.set_tunnel(self.host, self.port, headers=self.proxy_headers())
            return conn
        return http.client.HTTPConnection(proxy_host, proxy_port, timeout=self.timeout_s)

    def request_target(self, path: str) -> str:
        """What a request line names for `path`: the absolute URL through a plain-HTTP proxy, else the path."""
        path = self.prefix + path
        if self.proxy is not None and not self.https:  # a plain-HTTP proxy wants the absolute URL
            return f"http://{authority(self.host, self.port)}{path}"
        return path

    def _take(self) -> http.client.HTTPConnection:
        now = time.monotonic()
        with self.lock:
            while self.idle:
                used, conn = self.idle.pop()
                if now - used < IDLE_REUSE_S:
                    return conn
                conn.close()
        return self._connect()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append((time.monotonic(), conn))
                return
        conn.close()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> HTTPResult:
        """One POST. Raises `OSError` / `http.client.HTTPException` on a failed or dropped connection."""
        conn = self._take()
        extra = self.request_proxy_headers()
        try:
            # Body as bytes: http.client then sends headers and body in one segment.
            conn.request("POST", self.request_target(path), body=body, headers={**headers, **extra})
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return HTTPResult(resp.status, resp.headers, data)
