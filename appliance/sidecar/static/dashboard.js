// The dashboard: asks for the admin credential once (kept in sessionStorage, so only for this tab), then
// fills the tables from the admin API and refreshes them. Values are inserted with textContent only, so a
// job's error text can never become markup.
"use strict";

const TOKEN_KEY = "appliance.adminToken";
const body = document.body;
const refreshMs = Number(body.dataset.refreshMs) || 5000;
const historyLimit = Number(body.dataset.historyLimit) || 50;
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(method, path, payload) {
  const sent = token();
  const headers = { Authorization: "Bearer " + sent };
  const options = { method, headers };
  if (payload !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(payload); }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401 || response.status === 403) {
    // A refusal of a credential the tab no longer holds (an earlier, wrong one whose answer came late)
    // must not sign out the one entered since.
    if (token() === sent) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin((data && data.message) || "not authorised");
    }
    throw new Error("unauthorised");
  }
  if (!response.ok) { throw new Error((data && data.message) || response.statusText); }
  return data;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "–" : String(text);
  if (className) { td.className = className; }
  return td;
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await action(); await refresh(); } catch (e) { setStatus(e.message, "unhealthy"); }
    b.disabled = false;
  });
  return b;
}

function fill(id, rows, render, emptyText) {
  const tbody = document.querySelector("#" + id + " tbody");
  const columns = document.querySelectorAll("#" + id + " thead th").length;
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const row of rows) { tbody.append(render(row)); }
}

function when(iso) {
  if (!iso) { return null; }
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString();
}

function seconds(value) { return value === null || value === undefined ? null : Number(value).toFixed(1) + " s"; }

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.name;
  const last = job.last_run || {};
  const state = job.running ? "running on " + job.running.worker : job.paused ? "paused" : "idle";
  tr.append(cell(job.name), cell(job.describe || job.schedule), cell(when((job.next_runs || [])[0])),
            cell(last.outcome ? last.outcome + " · " + when(last.started) : null, "outcome-" + (last.outcome || "")),
            cell(state, job.running ? "state-running" : job.paused ? "state-paused" : ""), cell(job.lock_holder));
  const actions = document.createElement("td");
  const name = encodeURIComponent(job.name);
  actions.append(button("Trigger", () => api("POST", "/api/jobs/" + name + "/trigger")),
                 job.paused ? button("Resume", () => api("POST", "/api/jobs/" + name + "/resume"))
                            : button("Pause", () => api("POST", "/api/jobs/" + name + "/pause")));
  Actions.decorate(actions, job);
  tr.append(actions);
  return tr;
}

function runRow(run) {
  const tr = document.createElement("tr");
  tr.dataset.runId = run.run_id;
  tr.className = "clickable";
  tr.addEventListener("click", () => pick(run.run_id));
  tr.append(cell(run.job), cell(when(run.started)), cell(run.duration_ms === undefined || run.duration_ms === null ? null : run.duration_ms + " ms"),
            cell(run.outcome, "outcome-" + run.outcome), cell(run.trigger),
            cell(run.params ? Object.entries(run.params).map(([k, v]) => k + "=" + v).join(", ") : null),
            cell(run.attempt), cell(run.processed),
            cell(run.worker), cell(run.error, run.error ? "error" : ""));
  return tr;
}

function lockRow(lock) {
  const tr = document.createElement("tr");
  tr.append(cell(lock.key), cell(lock.holder), cell(seconds(lock.age_seconds)), cell(seconds(lock.ttl_seconds)),
            cell(lock.holder_alive ? "yes" : "no"));
  const actions = document.createElement("td");
  const path = "/api/locks/" + encodeURIComponent(lock.job);
  actions.append(lock.holder_alive
    ? button("Force clear", () => confirm("The holder is alive. Clear " + lock.key + " anyway?")
        ? api("DELETE", path + "?force=true") : Promise.resolve())
    : button("Clear", () => api("DELETE", path)));
  tr.append(actions);
  return tr;
}

function workerRow(worker) {
  const tr = document.createElement("tr");
  tr.append(cell(worker.id), cell(when(worker.started)), cell(seconds(worker.heartbeat_age) + " ago"),
            cell((worker.running || []).join(", ")));
  return tr;
}

function deadRow(dead) {
  const tr = document.createElement("tr");
  tr.dataset.deadId = dead.id;
  const id = encodeURIComponent(dead.id);
  tr.append(cell(dead.id), cell(dead.job), cell(when(dead.slot)), cell(dead.attempts), cell(when(dead.died_at)),
            cell(dead.error, "error"));
  const actions = document.createElement("td");
  actions.append(button("Retry", () => api("POST", "/api/dead-letters/" + id + "/retry")),
                 button("Drop", () => confirm("Drop dead letter " + dead.id + "?")
                   ? api("DELETE", "/api/dead-letters/" + id) : Promise.resolve()));
  tr.append(actions);
  return tr;
}

function breakerRow(breaker) {
  const tr = document.createElement("tr");
  tr.dataset.breaker = breaker.name;
  tr.append(cell(breaker.name), cell(breaker.state.replace("_", "-"), "breaker-" + breaker.state),
            cell(breaker.failures), cell(when(breaker.opened_at)), cell(seconds(breaker.retry_in_seconds)),
            cell(breaker.opened_total));
  return tr;
}

function showScheduler(scheduler) {
  const paused = scheduler.paused_all;
  const state = document.getElementById("scheduler");
  state.textContent = paused ? "scheduler: ALL JOBS PAUSED by " + scheduler.paused_by + " since " + when(scheduler.paused_at)
                             : "scheduler: running";
  state.className = "scheduler-state " + (paused ? "state-paused" : "");
  document.getElementById("pause-all").hidden = paused;
  document.getElementById("resume-all").hidden = !paused;
}

function field(list, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  list.append(dt, dd);
}

async function showRun(runId) {
  const detail = await api("GET", "/api/runs/" + encodeURIComponent(runId));
  const run = detail.run;
  document.getElementById("run-id").textContent = run.run_id;
  const fields = document.getElementById("run-fields");
  fields.replaceChildren();
  field(fields, "job", run.job);
  field(fields, "slot", when(run.slot));
  field(fields, "outcome", run.outcome);
  field(fields, "attempt", run.attempt);
  field(fields, "fence", run.fence);
  field(fields, "worker", run.worker);
  field(fields, "trigger", run.trigger);
  field(fields, "duration", run.duration_ms === null ? null : run.duration_ms + " ms");
  field(fields, "processed", run.processed);
  field(fields, "error", run.error);
  field(fields, "reason", run.reason);
  fill("run-attempts", detail.attempts, (a) => {
    const tr = document.createElement("tr");
    tr.append(cell(a.attempt), cell(when(a.started_at)), cell(a.outcome, "outcome-" + a.outcome), cell(a.fence),
              cell(a.worker), cell(a.error, a.error ? "error" : ""));
    return tr;
  }, "no attempt recorded");
  document.getElementById("run-traceback").textContent = detail.traceback || "(kept only for dead letters)";
  document.getElementById("run-detail").hidden = false;
}

function pick(runId) { showRun(runId).catch((e) => setStatus(e.message, "unhealthy")); }

async function drawLedger() {
  const hours = document.getElementById("timeline").dataset.hours || "6";
  try {
    const data = await api("GET", "/api/timeline?hours=" + hours);
    Charts.timeline(document.getElementById("timeline"), data, pick);
    Plans.skipped(data);
    Charts.lines(document.getElementById("duration-chart"), data, "duration_ms", "ms");
    Charts.lines(document.getElementById("processed-chart"), data, "processed", "");
  } catch (e) {
    if (e.message === "unauthorised") { throw e; }
    const note = document.createElement("p");
    note.className = "error";
    note.textContent = "ledger unavailable: " + e.message;
    document.getElementById("timeline").replaceChildren(note);
  }
}

function setStatus(text, level) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = "status " + (level || "");
}

async function refresh() {
  const [jobs, history, locks, dead, breakers, scheduler] = await Promise.all([
    api("GET", "/api/jobs"), api("GET", "/api/history?limit=" + historyLimit),
    api("GET", "/api/locks"), api("GET", "/api/dead-letters"), api("GET", "/api/breakers"),
    api("GET", "/api/scheduler"),
  ]);
  showScheduler(scheduler);
  await Actions.update(scheduler, jobs.jobs);
  fill("breakers", breakers.breakers, breakerRow, "no breaker has recorded a failure");
  Charts.locks(document.getElementById("lock-strip"), jobs.jobs, locks.locks);
  await drawLedger();
  fill("jobs", jobs.jobs, jobRow, "no job published yet: is a worker running?");
  await Plans.update(jobs.jobs);
  fill("history", history.runs, runRow, "no runs yet");
  fill("locks", locks.locks, lockRow, "no lock held");
  fill("workers", jobs.workers, workerRow, "no live worker");
  fill("dead-letters", dead.dead_letters, deadRow, "no dead letters");
  try {
    const health = await (await fetch("/health")).json();
    setStatus("health: " + health.status + " · updated " + new Date().toLocaleTimeString(), health.status);
  } catch (_) {
    setStatus("health unknown", "unhealthy");
  }
}

function schedule() {
  clearInterval(timer);
  timer = setInterval(() => refresh().catch((e) => setStatus(e.message, "unhealthy")), refreshMs);
}

function showLogin(message) {
  clearInterval(timer);
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  setStatus("sign in", "");
}

async function open() {
  document.getElementById("login").hidden = true;
  document.getElementById("board").hidden = false;
  try { await refresh(); schedule(); } catch (e) { if (e.message !== "unauthorised") { setStatus(e.message, "unhealthy"); schedule(); } }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  open();
});

for (const [id, path] of [["pause-all", "/api/pause-all"], ["resume-all", "/api/resume-all"]]) {
  const control = document.getElementById(id);
  control.addEventListener("click", async () => {
    control.disabled = true;
    try { await api("POST", path); await refresh(); } catch (e) { setStatus(e.message, "unhealthy"); }
    control.disabled = false;
  });
}

document.getElementById("run-close").addEventListener("click", () => {
  document.getElementById("run-detail").hidden = true;
});

document.getElementById("logout").addEventListener("click", (event) => {
  event.preventDefault();
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});

if (token()) { open(); } else { showLogin(""); }
