"""Starting worker processes for tests: a jobs file, an environment, and reading back what jobs recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_jobs_file(path: Path, jobs: dict[str, dict]) -> Path:
    """``jobs``: name -> table, e.g. ``{"tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"}}``."""
    lines = []
    for name, table in jobs.items():
        lines.append(f"[jobs.{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def worker_env(base: dict[str, str], jobs_file: Path, names: list[str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "SCHEDULE_"))}
    env.update(base)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update({"APPLIANCE_JOBS_FILE": str(jobs_file), "JOBS_ENABLED": ",".join(names), "PYTHONPATH": path,
                "LOG_FORMAT": "json", "LOG_LEVEL": "info", "STARTUP_WAIT": "5"})
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ("worker",)):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - the worker writes to it until stop() closes it
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], env=env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        t0 = time.monotonic()
        try:
            if self.alive():
                self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout)
        finally:
            self._log.close()
        return code, time.monotonic() - t0

    def kill(self) -> None:
        try:
            if self.alive():
                self.proc.kill()
                self.proc.wait()
        finally:
            self._log.close()

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"msg": raw})
        return lines

    def wait_for_log(self, msg: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if line.get("msg") == msg:
                    return line
            if not self.alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no log line {msg!r}; log:\n{self.log_path.read_text()[-3000:]}")


def records(client, job: str | None = None) -> list[dict]:
    items = [json.loads(v) for v in client.lrange("test:runs", 0, -1)]
    return [r for r in items if job is None or r["job"] == job]
