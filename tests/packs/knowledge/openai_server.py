"""A local OpenAI-compatible embeddings server speaking real HTTP (``POST /v1/embeddings``), so the real
``openai`` client is exercised: its retries, ``Retry-After`` handling and error mapping.

Answers are scripted: each queued ``Reply`` (status, headers, body) is served once, in order; with the queue
empty it answers 200 with vectors from the local embedder (so searches over them are meaningful). A text
containing ``REFUSE`` is answered 400, as the real API answers an input it rejects.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from appliance.packs.knowledge.embedder import LocalEmbedder
from tests.local_http import JsonHandler, LocalServer

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


class EmbeddingsServer(LocalServer):
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.failing: Reply | None = None  # served for every request while set
        server = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                request = self.read_json()
                if self.path != "/v1/embeddings":
                    self.send_json(404, {"error": {"message": "not found"}})
                    return
                inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
                server.requests.append(Seen(time.monotonic(), inputs, request["model"], request.get("dimensions"),
                                            self.headers.get("authorization", "")))
                reply = server.failing or (server.replies.popleft() if server.replies else None)
                if reply is None and any(REFUSE in text for text in inputs):
                    reply = Reply(400, body={"error": {"message": "input refused by policy",
                                                       "type": "invalid_request_error"}})
                if reply is not None:
                    self.send_json(reply.status, reply.body, reply.headers)
                    return
                size = request.get("dimensions") or 1536
                vectors = LocalEmbedder(size).embed(inputs)
                tokens = sum(len(text.split()) for text in inputs)
                self.send_json(200, {
                    "object": "list", "model": request["model"],
                    "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                })

        super().__init__(Handler, "openai-server")

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"
