"""The dashboard's pictures in headless Chromium against a real worker, gunicorn sidecar, redis-server and the
slot ledger in PostgreSQL: the timeline (one mark per slot, coloured by outcome, a gap left blank), the
duration and items charts, a run's detail on click, breakers and locks, and pause-all from the page, all under
the strict CSP (no page error, no CSP report). The ledger's past hours are written as the worker writes them
(rows of ``job_slots`` and ``job_runs``); a screenshot is saved to ``test-artifacts/sidecar/``."""

from __future__ import annotations

import itertools
from datetime import timedelta

import psycopg
import pytest

from appliance.kernel.runtime.breaker import CircuitBreaker
from appliance.kernel.runtime.clock import SYSTEM
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.test_dashboard import ARTIFACTS, appliance, browser  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.process]

WORKER = "host-a:41"


def write_ledger(url: str) -> dict[str, int]:
    """Five hours of the hourly-looking job ``tick`` every 10 minutes, with one failure retried once, one
    missed and one abandoned slot, and a gap of an hour with no slot at all."""
    now = SYSTEM.now().replace(second=0, microsecond=0)
    counts = {"success": 0, "failed": 0, "missed": 0, "abandoned": 0}
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(30):
            slot = now - timedelta(minutes=10 * (30 - i))
            if 12 <= i < 18:
                continue  # the gap
            outcome = {20: "failed", 24: "missed", 26: "abandoned"}.get(i, "success")
            counts[outcome] += 1
            run_id = f"run-{i}" if outcome != "missed" else None
            attempts = 2 if outcome == "failed" else (1 if run_id else 0)
            for attempt in range(1, attempts + 1):
                conn.execute(
                    "INSERT INTO job_runs (run_id, job, slot, trigger, attempt, fence, worker, started_at, "
                    "finished_at, duration_ms, outcome, processed, error) VALUES (%s, 'tick', %s, 'schedule', %s, "
                    "%s, %s, %s, %s, %s, %s, %s, %s)",
                    (run_id if attempt == attempts else f"{run_id}-a{attempt}", slot, attempt, 100 + i * 2 + attempt,
                     WORKER, slot + timedelta(seconds=1), slot + timedelta(seconds=2 + i % 7), 1000.0 + 150 * (i % 7),
                     "failure" if outcome == "failed" else outcome, 0 if outcome == "failed" else 3 + i % 5,
                     "RuntimeError: provider said <b>no</b>" if outcome == "failed" else None))
            conn.execute("INSERT INTO job_slots (job, slot, outcome, run_id, fence, worker, reason) "
                         "VALUES ('tick', %s, %s, %s, %s, %s, %s)",
                         (slot, outcome, run_id, 100 + i * 2 + attempts if run_id else None, WORKER,
                          "no worker ran it within its grace" if outcome == "missed" else None))
    return counts


def test_timeline_charts_run_detail_breakers_and_pause_all(appliance, browser, cluster, app_env):  # noqa: F811
    from playwright.sync_api import expect

    counts = write_ledger(app_env["DATABASE_URL"])
    CircuitBreaker("whatsapp", threshold=1, reset_after=300, client=cluster.r).record_failure()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    # A CSP refusal is a console error; a failed request is named by its response (the browser's own
    # /favicon.ico request is not the page's).
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.goto(appliance.url + "/admin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")

    row = page.locator('#timeline g.job-row[data-job="tick"]')
    expect(row).to_be_visible()
    marks = row.locator("rect.mark")
    expect(marks).to_have_count(sum(counts.values()))
    for group, count in (("success", counts["success"]), ("failed", 1), ("missed", 1), ("abandoned", 1)):
        expect(row.locator(f"rect.mark.{group}")).to_have_count(count)
    colours = {group: row.locator(f"rect.mark.{group}").first.evaluate("m => getComputedStyle(m).fill")
               for group in ("success", "failed", "missed", "abandoned")}
    assert len(set(colours.values())) == 4, colours
    xs = sorted(float(x) for x in marks.evaluate_all("ms => ms.map(m => m.getAttribute('x'))"))
    widest = max(b - a for a, b in itertools.pairwise(xs))
    assert widest > 5 * min(b - a for a, b in itertools.pairwise(xs)), "the hour without slots shows as a gap"

    runs = sum(counts.values()) - counts["missed"] + 1  # the failed slot had two attempts
    expect(page.locator("#duration-chart circle.series-dot")).to_have_count(runs)
    expect(page.locator("#processed-chart polyline")).to_have_count(1)

    row.locator("rect.mark.failed").click()
    detail = page.locator("#run-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#run-id")).to_have_text("run-20")
    expect(page.locator("#run-fields")).to_contain_text("RuntimeError: provider said <b>no</b>")
    expect(page.locator("#run-fields")).to_contain_text(WORKER)
    expect(page.locator("#run-fields")).to_contain_text("142")  # the fence of the second attempt
    expect(page.locator("#run-attempts tbody tr")).to_have_count(2)

    breaker = page.locator('#breakers tbody tr[data-breaker="whatsapp"]')
    expect(breaker).to_contain_text("open")
    expect(page.locator('#lock-strip .pill[data-job="tick"]')).to_have_text("tick: free")

    page.click("#pause-all")
    expect(page.locator("#scheduler")).to_contain_text("ALL JOBS PAUSED by admin-token")
    pause = cluster.state.pauses.paused_all()
    assert pause is not None and pause.by == "admin-token"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-pictures.png"), full_page=True)
    page.click("#resume-all")
    expect(page.locator("#scheduler")).to_have_text("scheduler: running")
    assert cluster.state.pauses.paused_all() is None
    context.close()
    assert problems == []
