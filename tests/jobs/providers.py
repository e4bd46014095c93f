"""A local HTTP server speaking the provider contract of docs/jobs.md (WhatsApp ``POST /messages``, voice
``POST /calls`` and ``GET /calls/{id}``), standing in for real providers, which cannot be reached here.

It de-duplicates on ``Idempotency-Key`` as the contract requires and records every request, so tests can
tell a request that was repeated (allowed) from a message delivered twice (never allowed). ``plan`` queues
answers to give before the normal one: ``(status, headers)`` pairs such as ``(429, {"Retry-After": "1"})``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "ProviderServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

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

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    status, headers, payload = 401, {}, {"error": {"message": "bad token"}}
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                    if server.delay:
                        time.sleep(server.delay)
                    status, headers, payload = server._answer(method, self.path, self.headers.get("Idempotency-Key"), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._reply("POST")

            def do_GET(self) -> None:
                self._reply("GET")

            def log_message(self, *args) -> None:
                pass

        return Handler
