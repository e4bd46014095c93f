"""Issue 22's operator actions through the CLI against a real worker, its Redis and PostgreSQL: triggers with
parameters, pauses with a reason, an end and an on-resume policy, the audit log, and backfills planned from the
ledger first."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, records, worker_env, write_jobs_file

pytestmark = pytest.mark.process

SECRET = "canary-smtp-secret-4711"
JOBS = {"report": {"callable": "tests.worker.sample_jobs:with_params", "schedule": "1h"},
        "tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "lock_ttl": 1}}
#: The jobs file's parameter declarations, as an operator writes them.
PARAMS = f"""
[jobs.report.params]
region = {{ type = "str", default = "north", choices = ["north", "south", "{SECRET}"] }}
limit = {{ type = "int", default = 10 }}
dry = {{ type = "bool", default = false }}
"""


@pytest.fixture
def appliance(tmp_path, app_env, redis_server):
    jobs_file = write_jobs_file(tmp_path / "jobs.toml", JOBS)
    jobs_file.write_text(jobs_file.read_text() + PARAMS)
    env = worker_env(app_env, jobs_file, list(JOBS), SMTP_PASSWORD=SECRET)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.wait_for_log("worker started")

    def cli(*args: str, code: int | None = 0) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True, text=True,
                                timeout=60)
        if code is not None:
            assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        return result

    cli.env = env
    yield cli, redis_server.client(), app_env["DATABASE_URL"]
    worker.terminate()


def sql(url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_a_trigger_with_parameters_reaches_ctx_params_is_stored_masked_and_bad_ones_are_refused(appliance):
    cli, client, url = appliance
    trigger_id = json.loads(cli("jobs", "trigger", "report", "--param", "region=south", "--param", "limit=3",
                                "--param", "dry=yes", "--json").stdout)["trigger_id"]
    run = wait_until(lambda: [r for r in records(client, "report") if r["trigger"] == "manual"], 15, "the run")[0]
    assert run["params"] == {"region": "south", "limit": 3, "dry": True}
    (stored,) = wait_until(lambda: sql(url, "SELECT params FROM job_runs WHERE job = 'report' AND "
                                            "finished_at IS NOT NULL"), 10, "the run's end")
    assert stored == ({"region": "south", "limit": 3, "dry": True},)
    history = json.loads(cli("jobs", "history", "report", "--json").stdout)
    assert history[0]["params"] == {"region": "south", "limit": 3, "dry": True}
    assert "region=south" in cli("jobs", "history", "report").stdout

    # A secret given as a parameter reaches the job, and is masked wherever it is kept or shown.
    cli("jobs", "trigger", "report", "--param", f"region={SECRET}", "--slot", "2026-01-02T03:04:05Z")
    secret_run = wait_until(lambda: [r for r in records(client, "report") if r["params"]["region"] == SECRET], 15,
                            "the run with the secret")[0]
    assert secret_run["slot"] == "2026-01-02T03:04:05+00:00"
    wait_until(lambda: len(sql(url, "SELECT 1 FROM job_runs WHERE job = 'report' AND finished_at IS NOT NULL")) == 2,
               10, "the second run's end")
    kept = json.dumps(sql(url, "SELECT params FROM job_runs") + sql(url, "SELECT after FROM audit_log"))
    assert SECRET not in kept and "***" in kept
    assert SECRET not in cli("jobs", "history", "report", "--json").stdout
    assert SECRET not in cli("audit-log", "--json").stdout

    for args, message in ((["--param", "colour=red"], "unknown parameter 'colour' (job report declares: dry, limit, "
                                                        "region)"),
                          (["--param", "region=west"], "parameter 'region' of job report: expected one of"),
                          (["--param", "limit=many"], "parameter 'limit' of job report: expected an int, not 'many'"),
                          (["--param", "limit"], "--param 'limit': expected key=value"),
                          (["--slot", "yesterday"], "--slot must be an ISO 8601 time")):
        refused = cli("jobs", "trigger", "report", *args, code=2)
        assert message in refused.stderr and "Traceback" not in refused.stderr
    unknown = cli("jobs", "trigger", "nope", code=2)
    assert "unknown job 'nope'" in unknown.stderr
    actions = [(row["action"], row["target"]) for row in json.loads(cli("audit-log", "--json").stdout)]
    assert actions[:2] == [("job.trigger", "report")] * 2, actions  # the refused ones changed nothing
    row = [r for r in json.loads(cli("audit-log", "--job", "report", "--json").stdout)
           if r["action"] == "job.trigger"][-1]
    assert row["actor"].startswith("cli:") and row["after"]["trigger_id"] == trigger_id


def test_a_pause_ends_by_itself_records_its_slots_with_who_and_why_and_runs_the_latest(appliance):
    cli, client, url = appliance
    wait_until(lambda: [r for r in records(client, "tick") if r["event"] == "end"], 10, "tick runs")
    pause = json.loads(cli("jobs", "pause", "tick", "--reason", "database maintenance", "--until", "3s",
                           "--on-resume", "run_latest", "--json").stdout)
    until = datetime.fromisoformat(pause["until"].replace("Z", "+00:00"))
    assert pause["by"].startswith("cli:") and pause["on_resume"] == "run_latest"
    # Ended by the worker itself, within a second of its end.
    wait_until(lambda: not client.hexists("appliance:paused", "tick"), 6, "the pause's end", interval=0.02)
    ended = datetime.now(UTC)
    assert ended - until < timedelta(seconds=1), ended - until
    paused = sql(url, "SELECT slot, reason FROM job_slots WHERE job = 'tick' AND slot > %s AND slot <= %s "
                      "ORDER BY slot", (until - timedelta(seconds=3), until))
    held = [slot for slot, reason in paused]
    assert len(held) >= 2
    latest = held[-1]
    rows = wait_until(lambda: dict(sql(url, "SELECT slot, outcome FROM job_slots WHERE job = 'tick' AND slot = ANY(%s)",
                                       (held,))) if sql(url, "SELECT 1 FROM job_slots WHERE job = 'tick' AND slot = %s "
                                                             "AND outcome = 'success'", (latest,)) else None,
                      10, "the latest paused slot run on resume")
    assert rows[latest] == "success" and {rows[s] for s in held[:-1]} == {"paused"}, rows
    reason = sql(url, "SELECT reason FROM job_slots WHERE slot = %s", (held[0],))[0][0]
    assert reason.startswith("paused by cli:") and "database maintenance" in reason and "until" in reason
    backfilled = [r for r in records(client, "tick") if r["trigger"] == "backfill"]
    assert [datetime.fromisoformat(r["slot"]) for r in backfilled if r["event"] == "end"] == [latest]
    log = [row for row in json.loads(cli("audit-log", "--job", "tick", "--json").stdout) if row["action"] != "job.spec"]
    assert [row["action"] for row in log] == ["job.resume", "job.pause"], log
    resumed = log[0]
    assert resumed["actor"].startswith("worker:") and resumed["before"]["reason"] == "database maintenance"
    assert list(resumed["after"]["backfills"]) == ["tick"]

    for args, message in ((["--until", "yesterday"], "--until must be an ISO 8601 time or a duration"),
                          (["--until", "2020-01-01T00:00:00Z"], "is not in the future"),
                          (["--on-resume", "catch_up:0"], "--on-resume must be skip, run_latest or catch_up:N")):
        refused = cli("jobs", "pause", "tick", *args, code=2)
        assert message in refused.stderr and "Traceback" not in refused.stderr
    assert not client.hexists("appliance:paused", "tick")


def _paused_gap(cli, client, url) -> tuple[list[tuple], datetime, datetime]:
    """Pause ``tick`` for three slots and resume it; the gap's slots and a window around them that the live
    schedule has left behind."""
    wait_until(lambda: [r for r in records(client, "tick") if r["event"] == "end"], 10, "tick runs")
    cli("jobs", "pause", "tick", "--reason", "a gap to fill")
    gap = wait_until(lambda: (p := sql(url, "SELECT slot FROM job_slots WHERE job = 'tick' AND outcome = 'paused' "
                                            "ORDER BY slot")) and len(p) >= 3 and p, 10, "three paused slots")
    cli("jobs", "resume", "tick")
    since, until = gap[0][0] - timedelta(seconds=2), gap[-1][0] + timedelta(seconds=1)
    # Slots newer than lock TTL + grace + CLOCK_SKEW_WARN (1 + 1 + 1 s) are the live schedule's: wait past them.
    wait_until(lambda: datetime.now(UTC) > until + timedelta(seconds=3.5), 10, "the window out of the live horizon")
    return gap, since, until


def test_backfill_plans_first_runs_the_plan_once_and_refuses_bad_windows(appliance):
    cli, client, url = appliance
    gap, since, until = _paused_gap(cli, client, url)
    window = ["--from", since.isoformat(), "--to", until.isoformat()]
    before = sql(url, "SELECT slot, outcome FROM job_slots WHERE job = 'tick' ORDER BY slot")
    plan = json.loads(cli("backfill", "tick", *window, "--dry-run", "--json").stdout)["plan"]
    planned = [datetime.fromisoformat(s["slot"].replace("Z", "+00:00")) for s in plan["will_run"]]
    # The plan is the ledger's: the paused slots, and any other of the window that never ran (one before the
    # worker's first slot has no row at all); every success is left alone, saying so.
    rows = dict(before)
    window_slots = [since + timedelta(seconds=i) for i in range(int((until - since).total_seconds()) + 1)]
    assert planned == [slot for slot in window_slots if rows.get(slot) != "success"], json.dumps(plan["will_run"])
    assert set(planned) >= {s for (s,) in gap}
    assert plan["will_not_run"] and all(s["why"].startswith("already committed by run ")
                                        for s in plan["will_not_run"]), plan["will_not_run"]
    assert all(s["outcome"] == "success" for s in plan["will_not_run"]), plan["will_not_run"]
    assert sql(url, "SELECT slot, outcome FROM job_slots WHERE job = 'tick' AND slot <= %s ORDER BY slot",
               (until,)) == [r for r in before if r[0] <= until], "a dry run changed the ledger"
    assert sql(url, "SELECT count(*) FROM backfills") == [(0,)]
    text = cli("backfill", "tick", *window, "--dry-run").stdout
    assert f"{len(planned)} slot(s) will run" in text and "already committed" in text and "dry run" in text

    done = json.loads(cli("backfill", "tick", *window, "--reason", "fill the gap", "--json").stdout)
    assert done["progress"]["complete"] and done["progress"]["outcomes"] == {"success": len(planned)}
    ran = [r for r in records(client, "tick") if r["trigger"] == "backfill" and r["event"] == "end"]
    assert sorted(datetime.fromisoformat(r["slot"]) for r in ran) == planned  # ctx.slot: the historical slot
    outcomes = dict(sql(url, "SELECT slot, outcome FROM job_slots WHERE job = 'tick' AND slot = ANY(%s)",
                        (planned,)))
    assert set(outcomes.values()) == {"success"}
    again = json.loads(cli("backfill", "tick", *window, "--only", "all", "--json").stdout)
    assert again["backfill"] is None and again["plan"]["will_run"] == []
    (row,) = [r for r in json.loads(cli("audit-log", "--json").stdout) if r["action"] == "job.backfill"]
    assert row["reason"] == "fill the gap" and row["after"]["counts"]["run"] == len(planned)

    now = datetime.now(UTC)
    for args, message in ((["nope", *window], "unknown job 'nope'"),
                          (["tick", "--from", now.isoformat(), "--to", (now - timedelta(hours=1)).isoformat()],
                           "must be after --from"),
                          (["tick", "--from", (now - timedelta(days=13)).isoformat(), "--to", now.isoformat()],
                           "more than 10,000 slots of tick: pass --force"),
                          (["tick", "--from", (now - timedelta(days=13)).isoformat(), "--to", now.isoformat(),
                            "--force"], "more than 1,000,000 slots"),
                          (["tick", "--from", "last week", "--to", now.isoformat()], "--from must be an ISO 8601")):
        refused = cli("backfill", *args, code=2)
        assert message in refused.stderr and "Traceback" not in refused.stderr


def test_backfill_on_a_terminal_shows_a_progress_bar_to_the_end(appliance):
    """On a terminal the command draws a progress bar while the workers run the plan (on a pipe it does not:
    the test above reads its plain output)."""
    cli, client, url = appliance
    _, since, until = _paused_gap(cli, client, url)
    plan = json.loads(cli("backfill", "tick", "--from", since.isoformat(), "--to", until.isoformat(), "--dry-run",
                          "--json").stdout)["plan"]
    total = len(plan["will_run"])
    assert total >= 3
    command = [sys.executable, "-m", "appliance", "backfill", "tick", "--from", since.isoformat(), "--to",
               until.isoformat(), "--reason", "on a terminal"]
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal of 100 columns
    process = subprocess.Popen(command, env=cli.env, stdin=secondary, stdout=secondary,
                               stderr=secondary, close_fds=True)
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal's other end closed: the command has exited
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait(timeout=60) == 0
    os.close(primary)
    text = screen.decode(errors="replace")
    assert re.search(rf"backfill \S+: +100%\|[^|]*\| {total}/{total} ", text), text
    assert "\r" in text, "the bar is redrawn in place"
    assert f"{total}/{total} slots ended (success={total})" in text, text
