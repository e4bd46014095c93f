// Operator actions with options (issue 22), beside dashboard.js whose api(), cell(), when() and refresh() it uses:
// the pause banner (who, why, until when), the audit log, and one panel for a trigger with parameters, a pause
// with a reason, an end and an on-resume policy, and a backfill whose plan is shown before it can start.
// Every value is inserted as text, never as markup.
"use strict";

const Actions = (() => {
  let backfillId = null;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (className) { node.className = className; }
    return node;
  }

  function input(name, label, value, type) {
    const wrap = el("label", label + " ");
    const field = el("input");
    field.name = name;
    field.type = type || "text";
    if (type === "checkbox") { field.checked = Boolean(value); } else { field.value = value === null || value === undefined ? "" : String(value); }
    wrap.append(field);
    return wrap;
  }

  function choice(name, label, options, value) {
    const wrap = el("label", label + " ");
    const select = el("select");
    select.name = name;
    for (const option of options) {
      const item = el("option", option);
      item.value = String(option);
      item.selected = String(option) === String(value);
      select.append(item);
    }
    wrap.append(select);
    return wrap;
  }

  function value(name) {
    const field = document.querySelector("#action-fields [name='" + name + "']");
    if (!field) { return undefined; }
    return field.type === "checkbox" ? field.checked : field.value;
  }

  function say(text, bad) {
    const result = document.getElementById("action-result");
    result.textContent = text;
    result.className = bad ? "error" : "";
  }

  function open(title, fields, buttons) {
    document.getElementById("action-title").textContent = title;
    document.getElementById("action-fields").replaceChildren(...fields);
    document.getElementById("action-buttons").replaceChildren(...buttons);
    document.getElementById("action-plan").replaceChildren();
    say("");
    document.getElementById("action-panel").hidden = false;
  }

  function act(label, run) {
    const b = el("button", label);
    b.type = "button";
    b.addEventListener("click", async () => {
      b.disabled = true;
      try { await run(); } catch (e) { say(e.message, true); }
      b.disabled = false;
    });
    return b;
  }

  function path(job, what) { return "/api/jobs/" + encodeURIComponent(job.name) + "/" + what; }

  function trigger(job) {
    const fields = (job.params || []).map((p) => p.choices ? choice("param:" + p.name, p.name, p.choices, p.default)
      : input("param:" + p.name, p.name + " (" + p.type + ")", p.default, p.type === "bool" ? "checkbox" : "text"));
    fields.push(input("slot", "slot (ISO, optional)", ""), input("reason", "reason", ""));
    open("Trigger " + job.name, fields, [act("Trigger", async () => {
      const params = {};
      for (const p of job.params || []) { params[p.name] = value("param:" + p.name); }
      const body = { params };
      if (value("slot")) { body.slot = value("slot"); }
      if (value("reason")) { body.reason = value("reason"); }
      const answer = await api("POST", path(job, "trigger"), body);
      say("trigger " + answer.trigger_id + " queued");
      await refresh();
    })]);
  }

  function pause(job) {
    const target = job ? job.name : "every job";
    open("Pause " + target, [input("reason", "reason", ""), input("until", "until (ISO or 30m, 2h; empty: until resumed)", ""),
      input("on_resume", "on resume (skip, run_latest, catch_up:N)", "skip")], [act("Pause", async () => {
      const body = { reason: value("reason"), on_resume: value("on_resume") || "skip" };
      if (value("until")) { body.until = value("until"); }
      await api("POST", job ? path(job, "pause") : "/api/pause-all", body);
      say("paused");
      await refresh();
    })]);
  }

  function planView(plan) {
    const view = document.getElementById("action-plan");
    view.replaceChildren(el("p", plan.counts.run + " slot(s) will run, " + plan.counts.not_run + " will not", "plan-counts"));
    const list = el("ul");
    for (const slot of plan.will_run.slice(0, 10)) { list.append(el("li", "run " + slot.slot + " (now: " + (slot.outcome || "no row") + ")")); }
    for (const slot of plan.will_not_run.slice(0, 10)) { list.append(el("li", "skip " + slot.slot + ": " + slot.why)); }
    view.append(list);
  }

  function backfill(job) {
    const now = Date.now();
    const start = act("Start backfill", async () => {
      const answer = await api("POST", path(job, "backfill"), body(false));
      backfillId = answer.backfill;
      say(backfillId ? "backfill " + backfillId + " started" : "nothing to run");
      await progress();
    });
    start.disabled = true;
    start.id = "backfill-start";
    const body = (dry) => ({ from: value("from"), to: value("to"), only: value("only"),
      max_parallel: Number(value("max_parallel")) || 1, dry_run: dry, reason: value("reason") });
    open("Backfill " + job.name, [input("from", "from (ISO)", new Date(now - 3600e3).toISOString()),
      input("to", "to (ISO)", new Date(now - 300e3).toISOString()), choice("only", "only", ["missing", "failed", "all"], "missing"),
      input("max_parallel", "max parallel", "1"), input("reason", "reason", "")], [act("Show plan", async () => {
      const answer = await api("POST", path(job, "backfill"), body(true));
      planView(answer.plan);
      start.disabled = answer.plan.counts.run === 0;
      say("plan only: nothing started");
    }), start]);
  }

  async function progress() {
    if (!backfillId) { return; }
    const p = await api("GET", "/api/backfills/" + encodeURIComponent(backfillId));
    say("backfill " + p.id + ": " + p.finished + "/" + p.total + " slots ended" + (p.complete ? " (complete)" : ""));
    if (p.complete) { backfillId = null; }
  }

  function decorate(cell, job) {
    cell.append(act("Trigger…", async () => trigger(job)), act("Pause…", async () => pause(job)),
                act("Backfill…", async () => backfill(job)));
  }

  function describe(pause) {
    return "by " + pause.by + " since " + when(pause.at) + ": " + (pause.reason || "no reason given") + " — until " +
      (pause.until ? when(pause.until) : "resumed") + (pause.on_resume && pause.on_resume !== "skip" ? " (then " + pause.on_resume + ")" : "");
  }

  function banner(scheduler, jobs) {
    const lines = [];
    if (scheduler.pause) { lines.push("ALL JOBS PAUSED " + describe(scheduler.pause)); }
    for (const job of jobs) { if (job.pause) { lines.push(job.name + " paused " + describe(job.pause)); } }
    const node = document.getElementById("pause-banner");
    node.replaceChildren(...lines.map((line) => el("p", line)));
    node.hidden = lines.length === 0;
  }

  async function auditLog() {
    const data = await api("GET", "/api/audit-log?limit=20");
    fill("audit-log", data.audit_log, (row) => {
      const tr = el("tr");
      tr.append(cell(when(row.at)), cell(row.actor), cell(row.action), cell(row.target), cell(row.reason));
      return tr;
    }, "no action recorded");
  }

  async function update(scheduler, jobs) {
    banner(scheduler, jobs);
    try { await auditLog(); await progress(); } catch (e) { if (e.message === "unauthorised") { throw e; } }
  }

  document.getElementById("action-close").addEventListener("click", () => {
    document.getElementById("action-panel").hidden = true;
  });
  document.getElementById("pause-all-with").addEventListener("click", () => pause(null));

  return { decorate, update };
})();
