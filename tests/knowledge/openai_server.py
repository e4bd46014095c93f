"""A local OpenAI-compatible embeddings server speaking real HTTP (``POST /v1/embeddings``), so the real
``openai`` client is exercised: its retries, ``Retry-After`` handling and error mapping.

Answers are scripted: each queued ``Reply`` (status, headers, body) is served once, in order; with the queue
empty it answers 200 with vectors from the local embedder (so searches over them are meaningful). A text
containing ``REFUSE`` is answered 400, as the real API answers an input it rejects.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appliance.knowledge.embedder import LocalEmbedder

REFUSE = "REFUSE"


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict = field(default_factory=lambda: {"error": {"message": "scripted failure", "type": "server_error"}})


@dataclass
class Seen:
    at: float
    inputs: list[str]
    model: str
    dimensions: int | None
    authorization: str


class EmbeddingsServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.failing: Reply | None = None  # served for every request while set
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                request = json.loads(self.rfile.read(length))
                if self.path != "/v1/embeddings":
                    self._send(404, {}, {"error": {"message": "not found"}})
                    return
                inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
                server.requests.append(Seen(time.monotonic(), inputs, request["model"], request.get("dimensions"),
                                            self.headers.get("authorization", "")))
                reply = server.failing or (server.replies.popleft() if server.replies else None)
                if reply is None and any(REFUSE in text for text in inputs):
                    reply = Reply(400, body={"error": {"message": "input refused by policy", "type": "invalid_request_error"}})
                if reply is not None:
                    self._send(reply.status, reply.headers, reply.body)
                    return
                size = request.get("dimensions") or 1536
                vectors = LocalEmbedder(size).embed(inputs)
                tokens = sum(len(text.split()) for text in inputs)
                self._send(200, {}, {
                    "object": "list", "model": request["model"],
                    "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                })

            def _send(self, status: int, headers: dict[str, str], body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="openai-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "EmbeddingsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
