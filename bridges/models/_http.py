"""Keep-alive HTTP(S) connections to one upstream: a thread's client here, an event loop's in `_async_http`.

Why our own client: at 32 requests in flight (640 requests/s against a 50 ms upstream) the client's
CPU per request decides the throughput, all threads sharing one GIL. Measured on this project's
2-core machine, per request: httpx 1.2 ms, urllib3 0.65 ms, `http.client` 0.4 ms (layer included),
of which its header parsing (the `email` package) was about a third. An OpenAI-compatible upstream
needs little of HTTP: one POST at a time per connection, a JSON body with a Content-Length, an
answer with a Content-Length, chunked, or ending with the connection. `ResponseReader` parses it
with httptools (the C parser uvicorn uses), for both transports; `HTTPPool` keeps connections for
reuse, does TLS with the system's certificates, honours `HTTP(S)_PROXY` / `NO_PROXY` (a CONNECT
tunnel for https), and bounds each request, connecting included, by `timeout_s`.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httptools

from bridges._errors import BenchbridgeError

# Servers close idle keep-alive connections (uvicorn after 5 s); older ones are not reused.
IDLE_REUSE_S = 4.0
# A proxy's answer to CONNECT is a status line and a few headers; more than this is not one.
MAX_TUNNEL_ANSWER_BYTES = 64 * 1024
# Limits on what an upstream may send (http.client refused a header line over 64 KiB too): a head that never
# ends costs the parser CPU (a header is concatenated as it arrives), a body memory. A chat completion is
# kilobytes; 64 MiB leaves room for long answers with logprobs.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
MAX_RESPONSE_BODY_BYTES = 64 * 1024 * 1024
RECV_BYTES = 256 * 1024


@dataclass
class HTTPResult:
    status: int
    headers: dict[str, str]  # names in lower case
    data: bytes


class UpstreamProtocolError(ConnectionError):
    """The upstream's bytes are not an HTTP/1.1 response, or the connection ended in the middle of one."""


def authority(host: str, port: int) -> str:
    """`host:port` for a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ResponseReader:
    """One response at a time on a connection, parsed by httptools as its bytes arrive (`feed`, `at_eof`)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.start()

    def start(self) -> None:
        """Ready for the next response (fresh containers: the last result keeps its own)."""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.trailing = False  # bytes came after the response: the connection's state is unknown
        self.head_bytes = 0
        self.body_bytes = 0

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.trailing

    def feed(self, data: bytes) -> bool:
        """Parses bytes of the response; True once it is complete."""
        if self.complete:
            self.trailing = True
            return True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 (or an accepted CONNECT): not an answer to a POST
            raise UpstreamProtocolError("the upstream switched protocols instead of answering") from None
        except httptools.HttpParserError as exc:
            if self.complete:  # not HTTP, after a whole response: that response stands, the connection does not
                self.trailing = True
                return True
            raise UpstreamProtocolError(f"unreadable HTTP response: {exc}") from None
        if not self.headers_done:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_RESPONSE_HEAD_BYTES:
                raise UpstreamProtocolError(f"response head larger than {MAX_RESPONSE_HEAD_BYTES} bytes")
        if self.body_bytes > MAX_RESPONSE_BODY_BYTES:
            raise UpstreamProtocolError(f"response body larger than {MAX_RESPONSE_BODY_BYTES} bytes")
        return self.complete

    def at_eof(self) -> None:
        """The connection ended: that ends a body sent without a length (RFC 9112 6.3, last rule); any other
        unfinished response is cut off."""
        if self.complete:
            return
        if self.headers_done and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            self.complete, self.keep_alive = True, False
            return
        raise UpstreamProtocolError("the upstream closed the connection before its response was complete")

    def result(self) -> HTTPResult:
        return HTTPResult(self.parser.get_status_code(), self.headers, b"".join(self.body))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # a second response nobody asked for
            self.trailing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # after the head: a chunked body's trailers, which change nothing here
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if not self.complete:
            self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body_bytes += len(body)
            if self.body_bytes <= MAX_RESPONSE_BODY_BYTES:  # past it, `feed` raises once this chunk is parsed
                self.body.append(body)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self.parser.get_status_code() < 200:  # an interim answer (103 Early Hints): the response follows
            self.headers, self.headers_done = {}, False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


def tunnel_answer(data: bytes) -> bool:
    """Whether the proxy's answer to CONNECT in `data` is whole yet (then it said 200). A refusal is raised
    as an `OSError` naming its status, as `http.client` does."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_TUNNEL_ANSWER_BYTES:
            raise UpstreamProtocolError("the proxy's answer to CONNECT has no end")
        return False
    status_line = data[: data.find(b"\r\n")].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise UpstreamProtocolError(f"unreadable answer to CONNECT: {status_line!r}")
    if parts[1] != "200":
        raise OSError(f"Tunnel connection failed: {' '.join(parts[1:])}")
    return True


class _Connection:
    """One keep-alive connection of a thread's pool."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = ResponseReader()
        self.last_used = time.monotonic()

    def exchange(self, request: bytes, deadline: float) -> HTTPResult:
        """Writes one request and reads its whole response before `deadline` (`time.monotonic()`)."""
        reader = self.reader
        reader.start()
        _settimeout(self.sock, deadline)
        self.sock.sendall(request)  # head and body in one segment
        while not reader.complete:
            _settimeout(self.sock, deadline)
            data = self.sock.recv(RECV_BYTES)
            if not data:
                reader.at_eof()
                break
            reader.feed(data)
        return reader.result()

    def quiet(self) -> bool:
        """Nothing arrived while it was idle: no close by the server, no bytes nobody asked for."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        poller = select.poll()  # not select(): that fails on descriptors past 1024
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        self.sock.close()


def _settimeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(remaining)


class HTTPPool:
    """At most `size` idle connections to the origin of `base_url`; one connection per request in flight."""

    def __init__(self, base_url: str, size: int, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BenchbridgeError(f"base_url: {base_url!r} is not an http(s) URL")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.https else 80
        self.port = parts.port or default_port
        self.prefix = parts.path.rstrip("/")
        if any(ord(c) <= 32 or ord(c) == 127 for c in self.prefix):  # would break the request line
            raise BenchbridgeError(f"base_url: {base_url!r}: a space or control character in the path (encode it)")
        # As browsers and http.client send it: the port only when it is not the scheme's own.
        bare_host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = authority(self.host, self.port) if self.port != default_port else bare_host
        self.size = size
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context() if self.https else None
        proxy = urllib.request.getproxies().get(parts.scheme)
        self.proxy = urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(self.host) else None
        self.idle: list[_Connection] = []
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

    def request_target(self, path: str) -> str:
        """What a request line names for `path`: the absolute URL through a plain-HTTP proxy, else the path."""
        path = self.prefix + path
        if self.proxy is not None and not self.https:  # a plain-HTTP proxy wants the absolute URL
            return f"http://{authority(self.host, self.port)}{path}"
        return path

    def request_bytes(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """A POST of `body` to `path` under `base_url`, as both transports send it."""
        head = [f"POST {self.request_target(path)} HTTP/1.1", f"Host: {self.host_header}"]
        head.append(f"Content-Length: {len(body)}")
        head += [f"{name}: {value}" for name, value in {**headers, **self.request_proxy_headers()}.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    def connect_request(self) -> bytes:
        """The CONNECT that opens a tunnel to the upstream through the proxy (for https)."""
        head = [f"CONNECT {authority(self.host, self.port)} HTTP/1.1", f"Host: {authority(self.host, self.port)}"]
        head += [f"{name}: {value}" for name, value in self.proxy_headers().items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")

    def address(self) -> tuple[str, int]:
        """Where a connection goes: the proxy if there is one, else the upstream."""
        if self.proxy is not None:
            return self.proxy.hostname or "", self.proxy.port or 80
        return self.host, self.port

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> HTTPResult:
        """One POST within `timeout_s`. Raises `OSError` (a refused, dropped or unreadable connection, a
        timeout, `socket.gaierror` and `ssl.SSLCertVerificationError` included)."""
        deadline = time.monotonic() + self.timeout_s
        request = self.request_bytes(path, body, headers)
        conn = self._take() or self._connect(deadline)
        try:
            result = conn.exchange(request, deadline)
        except BaseException:  # its answer, if it comes, must not reach the next request
            conn.close()
            raise
        if conn.reader.reusable:
            self._give_back(conn)
        else:
            conn.close()
        return result

    def _connect(self, deadline: float) -> _Connection:
        sock = socket.create_connection(self.address(), timeout=max(0.001, deadline - time.monotonic()))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the request is one write: send it now
            if self.proxy is not None and self.https:  # a CONNECT tunnel through the proxy, TLS inside it
                sock.sendall(self.connect_request())
                answer = b""
                while not tunnel_answer(answer):
                    _settimeout(sock, deadline)
                    data = sock.recv(4096)
                    if not data:
                        raise UpstreamProtocolError("the proxy closed the connection before answering CONNECT")
                    answer += data
            if self.context is not None:
                _settimeout(sock, deadline)
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while True:
            with self.lock:
                if not self.idle:
                    return None
                conn = self.idle.pop()
            if now - conn.last_used < IDLE_REUSE_S and conn.quiet():
                return conn
            conn.close()

    def _give_back(self, conn: _Connection) -> None:
        conn.last_used = time.monotonic()
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append(conn)
                return
        conn.close()
