"""Issue 22's operator actions on ``/admin`` in headless Chromium, against a real worker and gunicorn: a trigger
with parameters from a form, a pause with a reason and an end shown in a banner (who, why, until when), a
backfill whose plan is shown before it can start, and the audit log. A screenshot is saved to
``test-artifacts/sidecar/dashboard-actions.png``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env
from tests.sidecar.test_dashboard import ARTIFACTS, browser  # noqa: F401 - the headless Chromium fixture
from tests.worker.harness import WorkerProcess, records, write_jobs_file

pytestmark = [pytest.mark.browser, pytest.mark.process]

PARAMS = """
[jobs.report.params]
region = { type = "str", default = "north", choices = ["north", "south"] }
limit = { type = "int", default = 10 }
"""


@pytest.fixture
def appliance(tmp_path, app_env, sidecar_env):
    jobs_file = write_jobs_file(tmp_path / "jobs.toml", {
        "report": {"callable": "tests.worker.sample_jobs:with_params", "schedule": "1h"},
        "tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "lock_ttl": 1}})
    jobs_file.write_text(jobs_file.read_text() + PARAMS)
    base = {**app_env, "APPLIANCE_HOME": sidecar_env["APPLIANCE_HOME"], "APPLIANCE_JOBS_FILE": str(jobs_file),
            "ADMIN_TOKEN": ADMIN_TOKEN, "DASHBOARD_REFRESH": "1"}
    worker = WorkerProcess(process_env(base, JOBS_ENABLED="report,tick"), tmp_path / "worker.log")
    sidecar = SidecarProcess(process_env(base), tmp_path / "sidecar.log")
    try:
        worker.wait_for_log("worker started")
        yield sidecar.wait_ready()
    finally:
        sidecar.stop()
        worker.terminate()


def test_dashboard_triggers_with_params_pauses_with_a_reason_and_plans_a_backfill(appliance, browser, cluster,  # noqa: F811
                                                                                  redis_server):
    from playwright.sync_api import expect

    started = datetime.now(UTC).replace(microsecond=0)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Every answer the page asked for (the browser's own favicon.ico aside) was a success.
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
            and not r.url.endswith("/favicon.ico") and "/api/" in r.url and not r.url.endswith("/login") else None)
    page.goto(appliance.url + "/admin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")
    report = page.locator('#jobs tbody tr[data-job="report"]')
    expect(report).to_be_visible()

    report.get_by_role("button", name="Trigger…").click()
    panel = page.locator("#action-panel")
    panel.locator("[name='param:region']").select_option("south")
    panel.locator("[name='param:limit']").fill("3")
    panel.get_by_role("button", name="Trigger", exact=True).click()
    expect(page.locator("#action-result")).to_contain_text("queued")
    client = redis_server.client()
    from tests.services import wait_until
    run = wait_until(lambda: [r for r in records(client, "report") if r["trigger"] == "manual"], 15, "the run")[0]
    assert run["params"] == {"region": "south", "limit": 3}
    shown = page.locator("#history tbody tr").filter(has_text="region=south").filter(has_text="limit=3")
    expect(shown).to_have_count(1)  # the run's parameters in the history

    tick = page.locator('#jobs tbody tr[data-job="tick"]')
    tick.get_by_role("button", name="Pause…").click()
    panel.locator("[name='reason']").fill("vendor maintenance")
    panel.locator("[name='until']").fill("1h")
    panel.get_by_role("button", name="Pause", exact=True).click()
    banner = page.locator("#pause-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("tick paused by admin-token")
    expect(banner).to_contain_text("vendor maintenance")
    expect(banner).not_to_contain_text("until resumed")
    tick.get_by_role("button", name="Resume", exact=True).click()
    expect(banner).to_be_hidden()

    # A window before the worker started: no row at all, so every slot is missing and will run.
    tick.get_by_role("button", name="Backfill…").click()
    panel.locator("[name='from']").fill((started - timedelta(seconds=40)).isoformat())
    panel.locator("[name='to']").fill((started - timedelta(seconds=31)).isoformat())
    expect(page.locator("#backfill-start")).to_be_disabled()  # no plan shown yet
    panel.get_by_role("button", name="Show plan").click()
    expect(page.locator(".plan-counts")).to_have_text("10 slot(s) will run, 0 will not")
    page.locator("#backfill-start").click()
    expect(page.locator("#action-result")).to_contain_text("10/10 slots ended (complete)", timeout=20_000)
    backfilled = [r for r in records(client, "tick") if r["trigger"] == "backfill" and r["event"] == "end"]
    assert len(backfilled) == 10

    audit = page.locator("#audit-log tbody")
    for action in ("job.trigger", "job.pause", "job.resume", "job.backfill"):
        expect(audit).to_contain_text(action)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-actions.png"), full_page=True)
    context.close()
    assert errors == []
