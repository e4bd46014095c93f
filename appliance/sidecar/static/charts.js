// The dashboard's pictures as SVG built with DOM calls (no library, no build step, nothing inline for the CSP):
// a timeline per job with one mark per slot coloured by outcome, line charts of run duration and items
// processed, and the state of each lock. Colours come from dashboard.css through class names.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 1000;
  const ROW = 22;
  // A slot's outcome (appliance.outcomes) -> the colour group of its mark.
  const GROUPS = {
    success: "success", failed: "failed", dead_lettered: "failed", failure: "failed",
    skipped_locked: "skipped", skipped_unavailable: "skipped", paused: "skipped", coalesced: "skipped",
    skipped_overlap: "skipped", skipped_calendar: "calendar",
    missed: "missed", abandoned: "abandoned", lease_lost: "abandoned", cancelled: "abandoned",
    cancelled_by_newer: "abandoned", timed_out: "failed", running: "running", retrying: "running",
  };

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) { node.setAttribute(key, String(value)); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function group(outcome) { return GROUPS[outcome] || "other"; }

  function scale(since, until) {
    const t0 = Date.parse(since);
    const span = Math.max(Date.parse(until) - t0, 1);
    return (iso) => ((Date.parse(iso) - t0) / span) * WIDTH;
  }

  function axis(svg, since, until, y) {
    const t0 = Date.parse(since);
    const t1 = Date.parse(until);
    for (let i = 0; i <= 6; i++) {
      const x = (i / 6) * WIDTH;
      const when = new Date(t0 + ((t1 - t0) * i) / 6);
      svg.append(el("line", { x1: x, x2: x, y1: 0, y2: y, class: "grid" }));
      const label = el("text", { x: Math.min(Math.max(x, 18), WIDTH - 18), y: y + 12, class: "tick" },
                       when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
      svg.append(label);
    }
  }

  // One row per job; a mark per slot of job_slots, its title saying the outcome and the ledger's reason (why a
  // slot was skipped, excluded, paused, missed or coalesced). A slot without a row leaves a blank: a gap.
  function timeline(container, data, onPick) {
    container.replaceChildren();
    const names = Object.keys(data.jobs).sort();
    if (!names.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "no slot recorded in this window";
      container.append(p);
      return;
    }
    const x = scale(data.since, data.until);
    const height = names.length * ROW;
    const svg = el("svg", { viewBox: `-130 0 ${WIDTH + 140} ${height + 16}`, class: "timeline-svg",
                            role: "img", "aria-label": "slots per job over time" });
    axis(svg, data.since, data.until, height);
    names.forEach((name, row) => {
      const y = row * ROW;
      const line = el("g", { class: "job-row", "data-job": name });
      line.append(el("text", { x: -8, y: y + 15, class: "job-label", "text-anchor": "end" }, name));
      line.append(el("rect", { x: 0, y: y + 3, width: WIDTH, height: ROW - 6, class: "lane" }));
      for (const slot of data.jobs[name].slots) {
        const mark = el("rect", { x: Math.max(0, x(slot.slot) - 1.5), y: y + 3, width: 3, height: ROW - 6,
                                  class: "mark " + group(slot.outcome), "data-outcome": slot.outcome,
                                  "data-run-id": slot.run_id || "", "data-reason": slot.reason || "" });
        mark.append(el("title", {}, `${name} ${new Date(slot.slot).toLocaleString()}: ${slot.outcome}` +
                                   (slot.reason ? ` (${slot.reason})` : "")));
        if (slot.run_id) { mark.addEventListener("click", () => onPick(slot.run_id)); }
        line.append(mark);
      }
      svg.append(line);
    });
    container.append(svg);
  }

  // Runs of every job as one polyline each: x is the start, y the value of ``key``.
  function lines(container, data, key, unit) {
    container.replaceChildren();
    const height = 140;
    const names = Object.keys(data.jobs).sort().filter((n) => data.jobs[n].runs.length);
    const values = names.flatMap((n) => data.jobs[n].runs.map((r) => Number(r[key]) || 0));
    if (!values.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "no run in this window";
      container.append(p);
      return;
    }
    const top = Math.max(...values, 1);
    const x = scale(data.since, data.until);
    const svg = el("svg", { viewBox: `-60 -8 ${WIDTH + 70} ${height + 40}`, class: "chart-svg", role: "img",
                            "aria-label": key + " per run" });
    axis(svg, data.since, data.until, height);
    svg.append(el("text", { x: -6, y: 4, class: "tick", "text-anchor": "end" }, formatted(top, unit)));
    svg.append(el("text", { x: -6, y: height, class: "tick", "text-anchor": "end" }, "0"));
    names.forEach((name, index) => {
      const runs = data.jobs[name].runs;
      const points = runs.map((r) => `${x(r.started_at).toFixed(1)},${(height - ((Number(r[key]) || 0) / top) * height).toFixed(1)}`);
      const series = el("g", { class: `series series-${index % 6}`, "data-job": name });
      series.append(el("polyline", { points: points.join(" "), class: "series-line" }));
      runs.forEach((r, i) => {
        const [cx, cy] = points[i].split(",");
        const dot = el("circle", { cx, cy, r: 2.5, class: "series-dot " + group(r.outcome) });
        dot.append(el("title", {}, `${name} ${new Date(r.started_at).toLocaleString()}: ${formatted(r[key], unit)}`));
        series.append(dot);
      });
      svg.append(series);
    });
    container.append(svg);
    const legend = document.createElement("p");
    legend.className = "legend";
    names.forEach((name, index) => {
      const span = document.createElement("span");
      span.className = `key series-key series-${index % 6}`;
      span.textContent = name;
      legend.append(span);
    });
    container.append(legend);
  }

  function formatted(value, unit) {
    const number = Number(value) || 0;
    if (unit === "ms") { return number >= 1000 ? (number / 1000).toFixed(1) + " s" : number.toFixed(0) + " ms"; }
    return String(Math.round(number));
  }

  // Each published job as a pill: free, or held (by whom, for how long, TTL left).
  function locks(container, jobs, held) {
    container.replaceChildren();
    const byJob = new Map(held.map((lock) => [lock.job, lock]));
    for (const job of jobs) {
      const lock = byJob.get(job.name);
      const pill = document.createElement("span");
      pill.className = "pill " + (lock ? (lock.holder_alive ? "held" : "orphan") : "free");
      pill.dataset.job = job.name;
      pill.textContent = lock
        ? `${job.name}: held by ${lock.host || "?"} pid ${lock.pid || "?"}, ${Math.round(lock.age_seconds || 0)} s, ` +
          `TTL ${Math.round(lock.ttl_seconds || 0)} s${lock.holder_alive ? "" : " (holder gone)"}`
        : `${job.name}: free`;
      container.append(pill);
    }
  }

  return { timeline, lines, locks, group };
})();
