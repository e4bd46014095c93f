"""``appliance seed-demo``: demo tenants, agents, leads, campaigns, follow-ups, queued calls and an ended
trial, so that an operator sees each job do real work soon after ``./scripts/run``.

Idempotent: each demo tenant is created with everything that belongs to it only when no tenant of that name
exists, in one transaction under an advisory lock, so running the command twice (or on two hosts at once)
adds nothing the second time. Times are relative to now: the campaigns are due, follow-ups are due, calls are
queued (one tenant is open around the clock so its calls are dialled whatever the hour), and the trial has
just ended.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

import redis

from appliance.sdk import NotFound, config_or_exit, connect_db, fail, migrate, print_json, trigger_job

#: Jobs whose default schedules would keep them from the demo for up to a day; ``--trigger`` runs them now.
TRIGGERED = ("lead-reminder-scheduler", "trial-expiration", "call-cleanup")
#: Advisory lock key held while seeding.
SEED_LOCK_KEY = 0x64656D6F
ALWAYS = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
OFFICE = {day: ["09:30-18:30"] for day in ("mon", "tue", "wed", "thu", "fri")}
FIRST_NAMES = ("Aarav", "Diya", "Kabir", "Meera", "Rohan", "Sara", "Vikram", "Anika", "Dev", "Isha")
LAST_NAMES = ("Sharma", "Patel", "Iyer", "Khan", "Reddy", "Gupta", "Nair", "Singh", "Das", "Mehta")


@dataclass(frozen=True)
class DemoTenant:
    name: str
    plan: str
    timezone: str
    hours: dict
    domain: str
    country_prefix: str
    leads: int
    calls: int
    trial_ends: str | None = None  # an interval from now, e.g. '-1 minute'
    campaign_recipients: dict = field(default_factory=dict)  # channel -> how many


TENANTS = (
    DemoTenant("Demo Realty Mumbai", "pro", "Asia/Kolkata", OFFICE, "realty.example.com", "+91987650", 40, 6,
               campaign_recipients={"email": 300}),
    DemoTenant("Demo Support 24x7", "pro", "UTC", ALWAYS, "support.example.com", "+1202555", 30, 12,
               campaign_recipients={"whatsapp": 60}),
    DemoTenant("Demo Trial Startup", "trial", "Europe/Berlin", OFFICE, "startup.example.com", "+491511234", 10, 0,
               trial_ends="-1 minute"),
)


def register(sub: argparse._SubParsersAction) -> None:
    seed = sub.add_parser("seed-demo", help="create demo tenants, leads, campaigns, calls and an ended trial "
                                            "(idempotent)")
    seed.add_argument("--json", action="store_true", help="print one JSON document")
    seed.add_argument("--trigger", action="store_true",
                      help=f"also ask the running worker to run {', '.join(TRIGGERED)} once now")
    seed.set_defaults(handler=seed_demo)


def seed_demo(args: argparse.Namespace) -> int:
    config = config_or_exit()
    try:
        with connect_db(config) as conn:
            migrate(conn)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SEED_LOCK_KEY,))
                created = [t.name for t in TENANTS if seed_tenant(conn, t)]
    except Exception as exc:  # noqa: BLE001 - one clear line, no traceback, for any connection or SQL error
        fail(f"seed-demo failed: {type(exc).__name__}: {exc}")
    result = {"created": created, "existing": [t.name for t in TENANTS if t.name not in created]}
    if args.trigger:
        result["triggered"] = _trigger(config)
    if args.json:
        print_json(result)
    else:
        print(json.dumps(result))
        if not args.trigger:
            print("campaign-scheduler and call-scheduler pick the demo up within a minute; to see the others now: "
                  "appliance seed-demo --trigger, or appliance jobs run " + " | ".join(TRIGGERED))
    return 0


def _trigger(config) -> list[str]:
    """Trigger the jobs whose default schedules are hourly or daily; the ones the cluster does not know (no
    worker has published them yet) or an unreachable Redis are reported on stderr, not fatal."""
    done = []
    try:
        for job in TRIGGERED:
            try:
                trigger_job(config, job, by="seed-demo", reason="demo")
                done.append(job)
            except NotFound as exc:
                print(f"appliance: not triggered: {exc}", file=sys.stderr)
    except redis.RedisError as exc:
        print(f"appliance: not triggered, Redis unavailable: {exc}", file=sys.stderr)
    return done


def seed_tenant(conn, demo: DemoTenant) -> bool:
    """Create ``demo`` and its rows unless a tenant of that name exists; True if created."""
    if conn.execute("SELECT 1 FROM tenants WHERE name = %s", (demo.name,)).fetchone():
        return False
    tenant_id = conn.execute(
        "INSERT INTO tenants (name, plan, timezone, business_hours, trial_ends_at) "
        "VALUES (%s, %s, %s, %s, now() + %s::interval) RETURNING id",
        (demo.name, demo.plan, demo.timezone, json.dumps(demo.hours), demo.trial_ends or "30 days")).fetchone()[0]
    agents = [row[0] for row in conn.execute(
        "INSERT INTO agents (tenant_id, name, email) VALUES (%s, 'Asha Verma', %s), (%s, 'Neil Fernandes', %s) "
        "RETURNING id", (tenant_id, f"asha@{demo.domain}", tenant_id, f"neil@{demo.domain}")).fetchall()]
    _leads(conn, tenant_id, agents, demo)
    for channel, count in demo.campaign_recipients.items():
        _campaign(conn, tenant_id, channel, count, demo)
    conn.execute("INSERT INTO calls (tenant_id, lead_id, phone, scheduled_at) "
                 "SELECT %s, id, phone, now() FROM leads WHERE tenant_id = %s ORDER BY id LIMIT %s",
                 (tenant_id, tenant_id, demo.calls))
    # history old enough for call-cleanup to delete
    conn.execute("INSERT INTO calls (tenant_id, phone, status, finished_at, outcome) "
                 "SELECT %s, %s, 'completed', now() - interval '120 days', 'completed' FROM generate_series(1, 5)",
                 (tenant_id, f"{demo.country_prefix}0000"))
    conn.execute("INSERT INTO activity (tenant_id, kind, created_at) "
                 "SELECT %s, 'demo-history', now() - interval '45 days' FROM generate_series(1, 5)", (tenant_id,))
    return True


def _leads(conn, tenant_id: int, agents: list[int], demo: DemoTenant) -> None:
    """Leads with names, emails and valid numbers; every fourth has a follow-up already due."""
    rows = []
    for i in range(demo.leads):
        first, last = FIRST_NAMES[i % 10], LAST_NAMES[(i // 10 + i) % 10]
        due = "-5 minutes" if i % 4 == 0 else f"{i} days"
        rows.append((tenant_id, agents[i % len(agents)], f"{first} {last}", f"{first}.{last}{i}@{demo.domain}".lower(),
                     f"{demo.country_prefix}{i:04d}", due))
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO leads (tenant_id, owner_id, name, email, phone, next_follow_up_at) "
                           "VALUES (%s, %s, %s, %s, %s, now() + %s::interval)", rows)


def _campaign(conn, tenant_id: int, channel: str, count: int, demo: DemoTenant) -> None:
    """A campaign due now with ``count`` recipients, two of them invalid (to show failed rows)."""
    template = "Hi $name, our new listings are out: reply to book a visit." if channel == "email" \
        else "Hi $name, your support plan renews soon. Reply YES to keep it."
    campaign_id = conn.execute(
        "INSERT INTO campaigns (tenant_id, name, channel, subject, template, status, scheduled_at) "
        "VALUES (%s, %s, %s, 'News for $name', %s, 'scheduled', now()) RETURNING id",
        (tenant_id, f"Demo {channel} campaign", channel, template)).fetchone()[0]
    contact = "concat('reader', n, '@', %s::text)" if channel == "email" else \
        "concat(%s::text, lpad((5000 + n)::text, 4, '0'))"
    conn.execute(f"INSERT INTO campaign_recipients (campaign_id, contact, name) "
                 f"SELECT %s, {contact}, concat('Reader ', n) FROM generate_series(1, %s) AS n",
                 (campaign_id, demo.domain if channel == "email" else demo.country_prefix, count - 2))
    bad = ("not-an-address", "reader@") if channel == "email" else ("12345", "+1999")
    conn.execute("INSERT INTO campaign_recipients (campaign_id, contact, name) VALUES (%s, %s, 'Typo'), "
                 "(%s, %s, 'Typo')", (campaign_id, bad[0], campaign_id, bad[1]))
