"""A local HTTP server speaking the provider contract of docs/jobs.md (WhatsApp ``POST /messages``, voice
``POST /calls`` and ``GET /calls/{id}``), standing in for real providers, which cannot be reached here.

It de-duplicates on ``Idempotency-Key`` as the contract requires and records every request, so tests can
tell a request that was repeated (allowed) from a message delivered twice (never allowed). ``plan`` queues
answers to give before the normal one: ``(status, headers)`` pairs such as ``(429, {"Retry-After": "1"})``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from tests.local_http import JsonHandler, LocalServer


class ProviderServer:
    def __init__(self, token: str = "test-token", delay: float = 0.0):
        self.token = token
        self.delay = delay
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, idempotency key)
        self.delivered: Counter[str] = Counter()  # idempotency key -> deliveries (must stay 1)
        self.answers: dict[str, dict] = {}
        self.plan: list[tuple[int, dict[str, str]]] = []
        self.call_status: dict[str, str] = {}  # provider call id -> status returned by GET
        self.server = LocalServer(self._handler(), "provider")

    @property
    def url(self) -> str:
        return self.server.origin

    def start(self) -> ProviderServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _answer(self, method: str, path: str, key: str | None, body: dict) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests.append((method, path, key))
            if self.plan:
                status, headers = self.plan.pop(0)
                return status, headers, {"error": {"message": f"planned {status}"}}
            if method == "GET" and path.startswith("/calls/"):
                call_id = path.rsplit("/", 1)[1]
                return 200, {}, {"id": call_id, "status": self.call_status.get(call_id, "in-progress")}
            if not key:
                return 400, {}, {"error": {"message": "Idempotency-Key required"}}
            if key not in self.answers:
                self.delivered[key] += 1
                kind = "call" if path == "/calls" else "msg"
                self.answers[key] = {"id": f"{kind}-{len(self.answers) + 1}", "status": "queued", "to": body.get("to")}
            return 200, {}, self.answers[key]

    def _handler(self):
        server = self

        class Handler(JsonHandler):
            def _reply(self, method: str) -> None:
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    status, headers, payload = 401, {}, {"error": {"message": "bad token"}}
                else:
                    body = self.read_json() or {}
                    if server.delay:
                        time.sleep(server.delay)
                    key = self.headers.get("Idempotency-Key")
                    status, headers, payload = server._answer(method, self.path, key, body)
                self.send_json(status, payload, headers)

            def do_POST(self) -> None:
                self._reply("POST")

            def do_GET(self) -> None:
                self._reply("GET")

        return Handler
