"""Test doubles for tests/test_secrets.py: a python model that needs a secret argument, and an upstream
that answers 401 quoting the Authorization header it got (as some OpenAI-compatible servers do)."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TokenModel:
    """Answers qa with the key's answer, but only when given a real token (not an unresolved `${VAR}`)."""

    def __init__(self, token: str, datasets: list[str]) -> None:
        if "${" in token or len(token) < 8:
            raise ValueError("TokenModel: token was not resolved from the environment")
        from bridges.testing import AnswerKeyModel

        # A careless model printing its credentials: the framework child's log gets it; the run folder
        # is scrubbed after the framework ends.
        print(f"TokenModel: connecting with token {token}", file=sys.stderr, flush=True)
        self.key = AnswerKeyModel(datasets)

    def __call__(self, batch: list[Any]) -> list[str]:
        return self.key(batch)


class _EchoingUnauthorized(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {auth}", "type": "auth", "code": "invalid_api_key"}}
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        return


class EchoingUpstream:
    """A loopback `/v1` endpoint whose every POST is a 401 quoting the request's Authorization header."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingUnauthorized)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> EchoingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
