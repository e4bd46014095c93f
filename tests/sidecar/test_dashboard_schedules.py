"""The dashboard's schedules in headless Chromium against a real worker and a real gunicorn sidecar: each job's
overlap policy, jitter and calendars, its next planned starts (from ``GET /api/jobs/NAME/plan``), and the slots
that did not run with their reason on the timeline.

Job ``closed`` runs every 3 s with a jitter of 2 s under a calendar whose dates are yesterday, today and
tomorrow (UTC), so every slot of the test is excluded: the worker records ``skipped_calendar`` rows naming the
calendar, and its next starts are listed as excluded with the reason. Job ``hourly`` has a 10 minute jitter and
no calendar: its next starts are its slots plus the same deterministic offsets the worker uses."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from appliance.kernel.schedule.jitter import jitter_offset
from tests.conftest import _require
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env
from tests.worker.harness import REPO, WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.process]

ARTIFACTS = REPO / "test-artifacts" / "sidecar"
#: A calendar name with markup in it: the page must show it as text, never as markup.
CALENDAR = "<b>closed</b>"


def _jobs_file(path, days: list[str]):
    path.write_text("""
[calendars."{CALENDAR}"]
dates = DAYS

[jobs.closed]
callable = "tests.sidecar.jobs:work"
schedule = "3s"
jitter = "2s"
calendar = ["{CALENDAR}"]
overlap = "buffer_one"

[jobs.hourly]
callable = "tests.sidecar.jobs:work"
schedule = "1h"
jitter = "10m"
""".replace("{CALENDAR}", CALENDAR).replace("DAYS", json.dumps(days)))
    return path


@pytest.fixture
def appliance(tmp_path, app_env, sidecar_env):
    today = datetime.now(UTC).date()
    days = [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]
    jobs_file = _jobs_file(tmp_path / "jobs.toml", days)
    base = {**app_env, "APPLIANCE_HOME": sidecar_env["APPLIANCE_HOME"], "APPLIANCE_JOBS_FILE": str(jobs_file),
            "ADMIN_TOKEN": ADMIN_TOKEN, "DASHBOARD_REFRESH": "1"}
    worker = WorkerProcess(process_env(base, JOBS_ENABLED="closed,hourly"), tmp_path / "worker.log")
    sidecar = SidecarProcess(process_env(base), tmp_path / "sidecar.log")
    try:
        worker.wait_for_log("worker started")
        yield sidecar.wait_ready()
    finally:
        sidecar.stop()
        worker.terminate()


@pytest.fixture
def browser():
    _require("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
        yield chromium
        chromium.close()


def _plan(appliance, job: str) -> dict:
    response = httpx.get(f"{appliance.url}/api/jobs/{job}/plan?next=5",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_dashboard_shows_policy_next_starts_and_skipped_calendar_slots(appliance, browser, app_env):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(appliance.url + "/admin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")

    closed = page.locator('#plans tbody tr[data-job="closed"]')
    expect(closed.locator("td.overlap")).to_have_text("buffer_one")
    expect(closed.locator("td.jitter")).to_have_text("up to 2 s")
    expect(closed.locator("td.calendars")).to_have_text(CALENDAR)
    expect(closed.locator("td.calendars b")).to_have_count(0)
    expect(closed.locator("td.run-limits")).to_have_text("no timeout, thread")

    # Every next start of ``closed`` is excluded today, listed with its calendar and reason.
    starts = closed.locator("li.planned")
    expect(starts).to_have_count(5)
    for i in range(5):
        expect(starts.nth(i)).to_have_attribute("data-runs", "false")
        expect(starts.nth(i).locator(".reason")).to_have_text(
            re.compile(r"^ skipped_calendar \[<b>closed</b>\]: excluded date \d{4}-\d{2}-\d{2}$"))

    # ``hourly``'s next starts carry the worker's deterministic jitter: slot + sha256(job, slot) mod 600 s.
    hourly = page.locator('#plans tbody tr[data-job="hourly"]')
    expect(hourly.locator("td.jitter")).to_have_text("up to 600 s")
    expect(hourly.locator("td.calendars")).to_have_text("none")
    planned = hourly.locator("li.planned")
    expect(planned).to_have_count(5)
    api_slots = _plan(appliance, "hourly")["slots"]
    for i, slot in enumerate(api_slots):
        item = planned.nth(i)
        expect(item).to_have_attribute("data-runs", "true")
        expect(item).to_have_attribute("data-slot", slot["slot"])
        offset = (_utc(item.get_attribute("data-start")) - _utc(slot["slot"])).total_seconds()
        assert abs(offset - jitter_offset("hourly", _utc(slot["slot"]), 600.0)) < 0.002, (slot, offset)
        expect(item.locator(".jitter")).to_contain_text(f"+ {offset:.1f} s jitter")

    # The worker reaches a slot of ``closed``: a skipped_calendar mark on the timeline whose title gives the
    # reason, and the same slot with its reason in the table of slots that did not run.
    mark = page.locator('#timeline g[data-job="closed"] rect.mark.calendar[data-outcome="skipped_calendar"]').first
    expect(mark).to_be_attached(timeout=15_000)
    reason = mark.get_attribute("data-reason")
    assert re.fullmatch(r"calendar <b>closed</b>: excluded date \d{4}-\d{2}-\d{2}", reason), reason
    expect(mark.locator("title")).to_contain_text(f"skipped_calendar ({reason})")
    row = page.locator('#skipped tbody tr[data-job="closed"][data-outcome="skipped_calendar"]').first
    expect(row.locator("td.reason")).to_have_text(reason)

    # What the page shows is the ledger's: the worker's rows for ``closed`` say skipped_calendar with that reason.
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT outcome, reason FROM job_slots WHERE job = 'closed'").fetchall()
    assert rows and {(outcome, why) for outcome, why in rows} == {("skipped_calendar", reason)}, rows

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-schedules.png"), full_page=True)
    context.close()
    assert errors == []
