"""A stand-in for vLLM's / SGLang's OpenAI-compatible server, for tests on a machine without a GPU: takes
the engines' flags (`--model` or `--model-path`, `--served-model-name`, `--host`, `--port`, `--api-key`,
and any other), answers `/health` 503 for `--warmup-s` seconds (an engine loading weights) then 200, and
`/v1/chat/completions` with "served:<model>:<last user message>" to a request bearing the key (401 else).
With `--answer-key DATASET` it answers from that dataset's key instead. `--exit-code N` exits at once with N after printing an engine-like error. Its argv goes to `$STANDIN_ARGV`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", "--model-path", dest="model")
parser.add_argument("--served-model-name")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
parser.add_argument("--api-key")
parser.add_argument("--warmup-s", type=float, default=0.0)
parser.add_argument("--exit-code", type=int)
parser.add_argument("--answer-key", help="a qa dataset folder: its answers are given (as AnswerKeyModel does)")
parser.add_argument("--wrong-ids", default="", help="comma-separated sample ids answered wrong")
args, _ = parser.parse_known_args()
if os.environ.get("STANDIN_ARGV"):
    with open(os.environ["STANDIN_ARGV"], "w", encoding="utf-8") as fh:
        json.dump(sys.argv[1:], fh)
print(f"stand-in engine: args {sys.argv[1:]}", flush=True)
if args.exit_code is not None:
    print("RuntimeError: CUDA out of memory (stand-in)", flush=True)
    sys.exit(args.exit_code)
ready_at = time.monotonic() + args.warmup_s
key = None
if args.answer_key:
    from bridges.testing import AnswerKeyModel

    key = AnswerKeyModel([args.answer_key], wrong_ids=[i for i in args.wrong_ids.split(",") if i])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a: object) -> None:
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._send(200 if time.monotonic() >= ready_at else 503, {})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != f"Bearer {args.api_key}":
            return self._send(401, {"error": {"message": "bad key"}})
        text = f"served:{body['model']}:{body['messages'][-1]['content']}"
        if key is not None:
            text = key.answer("\n".join(m["content"] for m in body["messages"] if m["role"] != "system"))
        self._send(200, {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })


ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
