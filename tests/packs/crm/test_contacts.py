"""Contact checks (the per-domain cache in ``check_email`` gives exactly the library's verdict and form), and the
pack's job declarations."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email

from appliance.kernel.contract.catalog import load_jobs
from appliance.packs.crm.jobs import JOBS
from appliance.packs.crm.jobs.contacts import check_email, check_phone

ADDRESSES = ["a@example.com", "A.B+c@Example.COM", "not-an-address", "also good@x", "reader@", "a..b@example.com",
             ".a@example.com", "a@-bad.com", "a@localhost", "x@test", "jöhn@exämple.com", "a@example.com.",
             '"q"@example.com', "a@@example.com", "a@exa mple.com", "a@[1.2.3.4]", "x" * 65 + "@example.com"]


@pytest.mark.parametrize("address", ADDRESSES)
def test_check_email_agrees_with_email_validator(address):
    try:
        expected = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        assert check_email(address) == (address, f"invalid email address: {exc}")
    else:
        assert check_email(address) == (expected, None)


@pytest.mark.parametrize("number, expected", [
    ("+91 98765 00007", "+919876500007"), ("+1 (202) 555-0100", "+12025550100"),
    ("12345", None), ("+1999", None), ("not a number", None),
])
def test_check_phone(number, expected):
    normalized, problem = check_phone(number)
    assert (normalized, problem is None) == ((expected, True) if expected else (number, False))


def test_the_pack_declares_seed_004s_jobs_with_their_defaults(make_config):
    schedules = {job.name: job.schedule.text for job in load_jobs(make_config(LEAD_REMINDER_INTERVAL="15"))}
    assert {name: schedules[name] for name in ("campaign-scheduler", "lead-reminder-scheduler", "call-scheduler",
                                               "trial-expiration", "call-cleanup")} == {
        "campaign-scheduler": "* * * * *", "lead-reminder-scheduler": "15m", "call-scheduler": "30s",
        "trial-expiration": "0 * * * *", "call-cleanup": "02:00"}
    assert all(spec.needs == ("db",) for spec in JOBS)
