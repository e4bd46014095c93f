"""``/admin`` in headless Chromium (Debian's ``chromium`` driven by Playwright) against a real gunicorn sidecar
and a real worker: sign in once per tab, trigger a job and see its run appear, pause and resume it, and watch
the page refresh itself. A screenshot is saved to ``test-artifacts/sidecar/dashboard.png``."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import _require
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env
from tests.worker.harness import REPO, WorkerProcess, write_jobs_file

pytestmark = [pytest.mark.browser, pytest.mark.process]

CHROMIUM = "chromium"
ARTIFACTS = REPO / "test-artifacts" / "sidecar"


@pytest.fixture
def appliance(tmp_path, app_env, sidecar_env):
    """A worker running job ``tick`` (hourly: the runs the test looks at are its triggers) and the sidecar."""
    jobs_file = write_jobs_file(tmp_path / "jobs.toml",
                                {"tick": {"callable": "tests.sidecar.jobs:work", "schedule": "1h"}})
    base = {**app_env, "APPLIANCE_HOME": sidecar_env["APPLIANCE_HOME"], "APPLIANCE_JOBS_FILE": str(jobs_file),
            "ADMIN_TOKEN": ADMIN_TOKEN, "DASHBOARD_REFRESH": "1"}
    worker = WorkerProcess(process_env(base, JOBS_ENABLED="tick"), tmp_path / "worker.log")
    sidecar = SidecarProcess(process_env(base), tmp_path / "sidecar.log")
    try:
        worker.wait_for_log("worker started")
        yield sidecar.wait_ready()
    finally:
        sidecar.stop()
        worker.terminate()


@pytest.fixture
def browser():
    _require(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def _history_rows(page, trigger: str):
    return page.locator("#history tbody tr[data-run-id]").filter(has_text=trigger)


def test_dashboard_signs_in_once_triggers_pauses_and_refreshes(appliance, browser, cluster):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(appliance.url + "/admin")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()

    page.fill("#token", "wrong-token")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("invalid credential")

    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")
    row = page.locator('#jobs tbody tr[data-job="tick"]')
    expect(row).to_be_visible()
    expect(page.locator("#status")).to_contain_text("health: ok")

    # Kept for the tab: a reload does not ask again.
    page.reload()
    expect(row).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()

    row.get_by_role("button", name="Trigger", exact=True).click()
    expect(_history_rows(page, "manual").filter(has_text="success")).to_have_count(1, timeout=10_000)
    # Exactly one run of the trigger (the hourly slot itself may also run, when the test spans an hour's start).
    manual = [r for r in cluster.state.history.runs("tick") if r.trigger == "manual" and r.outcome == "success"]
    assert len(manual) == 1

    row.get_by_role("button", name="Pause", exact=True).click()
    expect(row.get_by_role("button", name="Resume", exact=True)).to_be_visible()
    expect(row).to_contain_text("paused")
    assert cluster.state.pauses.paused() == {"tick"}
    row.get_by_role("button", name="Resume", exact=True).click()
    expect(row.get_by_role("button", name="Pause", exact=True)).to_be_visible()
    assert cluster.state.pauses.paused() == set()

    # A run started elsewhere (the CLI) shows up without touching the page.
    cluster.state.triggers.request("tick", by="cli")
    expect(_history_rows(page, "manual")).to_have_count(2, timeout=10_000)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Another tab of a new session has no token and asks for it.
    other = browser.new_context().new_page()
    other.goto(appliance.url + "/admin")
    expect(other.locator("#login")).to_be_visible()
    other.context.close()
    context.close()
    assert errors == []


def test_a_late_refusal_of_a_wrong_credential_does_not_sign_out_the_right_one(appliance, browser):
    """The wrong token's six requests are in flight together; one 401 shows the form again, and the user types
    the right token while the others are still on the wire. Their late 401s must not sign that one out (they
    did: a loaded machine answered the wrong token's last request after the right one's board was shown)."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    held = []

    def hold_wrong_locks(route):
        wrong = route.request.headers.get("authorization") == "Bearer wrong-token"
        if wrong and route.request.url.endswith("/api/locks"):
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/**", hold_wrong_locks)
    page.goto(appliance.url + "/admin")
    page.fill("#token", "wrong-token")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("invalid credential")
    assert len(held) == 1, "the wrong token's /api/locks request is held back"

    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")
    row = page.locator('#jobs tbody tr[data-job="tick"]')
    expect(row).to_be_visible()

    with page.expect_response(lambda r: r.url.endswith("/api/locks") and r.status == 401):
        held[0].continue_()
    page.evaluate("() => new Promise((done) => setTimeout(done, 100))")
    expect(page.locator("#login")).to_be_hidden()
    expect(row).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('appliance.adminToken')") == ADMIN_TOKEN


def test_dashboard_retries_a_dead_letter_and_the_worker_runs_it(appliance, browser, cluster):
    from playwright.sync_api import expect

    dead_id = cluster.state.dead_letters.add("tick", slot="2026-01-01T00:00:00Z", attempts=3,
                                          error="RuntimeError: <b>gave up</b>")
    context = browser.new_context()
    page = context.new_page()
    page.goto(appliance.url + "/admin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")
    row = page.locator(f'#dead-letters tbody tr[data-dead-id="{dead_id}"]')
    # The error is shown as text, never as markup.
    expect(row.locator("td.error")).to_have_text("RuntimeError: <b>gave up</b>")
    row.get_by_role("button", name="Retry").click()
    expect(row).to_have_count(0)
    expect(_history_rows(page, f"dead-letter retry {dead_id}").filter(has_text="success")).to_have_count(
        1, timeout=10_000)
    context.close()
    assert cluster.state.dead_letters.newest() == []
    (entry,) = cluster.state.audit.newest()
    assert (entry.who, entry.action, entry.target) == ("admin-token", "dlq.retry", dead_id)
