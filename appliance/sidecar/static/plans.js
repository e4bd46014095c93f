// Each job's schedule policy (overlap, jitter, calendars, timeout, isolation) with its next planned starts as
// its workers will run them (GET /api/jobs/NAME/plan: jitter applied, a slot a calendar excludes shown with the
// calendar and the reason), and the slots of the timeline's window that did not run, each with its reason.
// Beside dashboard.js, whose api(), cell() and when() it uses. Values are inserted with textContent only.
"use strict";

const Plans = (() => {
  const NEXT = 5;
  const LISTED = 30;
  // job -> {key, slots, error}: a plan is asked for again when the job's spec changes or its first slot passed.
  const cache = new Map();

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (className) { node.className = className; }
    return node;
  }

  function keyOf(job) { return String(job.spec_version) + " " + JSON.stringify(job.policy || null); }

  function stale(entry, job) {
    if (!entry || entry.key !== keyOf(job)) { return true; }
    if (entry.error) { return Date.now() - entry.at > 30000; }
    return !entry.slots.length || Date.parse(entry.slots[0].start) <= Date.now();
  }

  async function fetchPlan(job) {
    const path = "/api/jobs/" + encodeURIComponent(job.name) + "/plan?next=" + NEXT;
    try {
      const plan = await api("GET", path);
      cache.set(job.name, { key: keyOf(job), slots: plan.slots, error: null, at: Date.now() });
    } catch (e) {
      if (e.message === "unauthorised") { throw e; }
      cache.set(job.name, { key: keyOf(job), slots: [], error: e.message, at: Date.now() });
    }
  }

  function overlapText(policy) {
    if (!policy) { return null; }
    return policy.overlap === "allow" ? "allow, at most " + policy.max_concurrent + " at once" : policy.overlap;
  }

  function jitterText(policy) {
    return policy && policy.jitter ? "up to " + Number(policy.jitter).toFixed(policy.jitter % 1 ? 1 : 0) + " s" : "none";
  }

  function runText(policy) {
    if (!policy) { return null; }
    const timeout = policy.timeout ? "timeout " + policy.timeout + " s" : "no timeout";
    return timeout + ", " + policy.isolation;
  }

  function startItem(slot) {
    const item = el("li", null, slot.runs ? "planned" : "planned excluded");
    item.dataset.slot = slot.slot;
    item.dataset.start = slot.start;
    item.dataset.runs = String(slot.runs);
    if (slot.runs) {
      item.append(el("span", when(slot.start), "start"));
      const offset = (Date.parse(slot.start) - Date.parse(slot.slot)) / 1000;
      if (offset > 0) { item.append(el("span", " (slot " + when(slot.slot) + " + " + offset.toFixed(1) + " s jitter)", "jitter")); }
    } else {
      item.append(el("span", when(slot.slot), "start"));
      item.append(el("span", " skipped_calendar [" + slot.calendar + "]: " + slot.reason, "reason"));
    }
    if (slot.dst) { item.append(el("span", " · " + slot.dst, "dst")); }
    return item;
  }

  function planRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.name;
    const policy = job.policy;
    const calendars = policy && policy.calendars && policy.calendars.length ? policy.calendars.join(", ") : "none";
    tr.append(cell(job.name), cell(overlapText(policy), "overlap"), cell(jitterText(policy), "jitter"),
              cell(calendars, "calendars"), cell(runText(policy), "run-limits"));
    const next = document.createElement("td");
    next.className = "next-starts";
    const entry = cache.get(job.name);
    if (!entry || entry.error) {
      next.append(el("span", entry ? "plan unavailable: " + entry.error : "…", entry ? "error" : ""));
    } else {
      const list = el("ol");
      for (const slot of entry.slots) { list.append(startItem(slot)); }
      next.append(list);
    }
    tr.append(next);
    return tr;
  }

  // Refreshes the plans that need it, then fills the table: one row per published job.
  async function update(jobs) {
    await Promise.all(jobs.filter((job) => stale(cache.get(job.name), job)).map(fetchPlan));
    const names = new Set(jobs.map((job) => job.name));
    for (const name of [...cache.keys()]) { if (!names.has(name)) { cache.delete(name); } }
    fill("plans", jobs, planRow, "no job published yet");
  }

  // The window's slots that did not run (skipped, paused, missed, coalesced, failed...), newest first.
  function skipped(data) {
    const rows = [];
    for (const [name, job] of Object.entries(data.jobs)) {
      for (const slot of job.slots) {
        if (!["success", "running", "retrying"].includes(slot.outcome)) { rows.push({ job: name, ...slot }); }
      }
    }
    rows.sort((a, b) => Date.parse(b.slot) - Date.parse(a.slot));
    fill("skipped", rows.slice(0, LISTED), (row) => {
      const tr = document.createElement("tr");
      tr.dataset.job = row.job;
      tr.dataset.outcome = row.outcome;
      tr.append(cell(row.job), cell(when(row.slot)), cell(row.outcome, "outcome-" + row.outcome),
                cell(row.reason, "reason"));
      return tr;
    }, "every slot of this window ran");
  }

  return { update, skipped };
})();
