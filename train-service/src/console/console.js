// The console's actions and live job progress. Served as a file: the
// Content-Security-Policy allows no inline script. Without this script the
// pages still read; the action forms stay hidden.
//
// The bearer token is asked for on the page once, kept in this tab's
// sessionStorage and sent only as the Authorization header: never in a URL,
// a cookie or a log.
"use strict";

const TOKEN_KEY = "crs-console-token";

function token() {
  const field = document.getElementById("token");
  if (field && field.value) {
    sessionStorage.setItem(TOKEN_KEY, field.value);
    return field.value;
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function say(text, failed) {
  const status = document.getElementById("action-status");
  status.textContent = text;
  status.className = failed ? "refused" : "done";
}

async function call(path, body) {
  const headers = { "Content-Type": "application/json" };
  const secret = token();
  if (secret) {
    headers.Authorization = "Bearer " + secret;
  }
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  let answer = {};
  try {
    answer = await response.json();
  } catch (_) {
    // A body that is not JSON: the status says enough.
  }
  return { status: response.status, ok: response.ok, answer };
}

function actionOf(form) {
  const fields = Object.fromEntries(new FormData(form).entries());
  const model = form.dataset.model;
  switch (form.dataset.action) {
    case "promote":
      return [`/api/v1/models/${model}/promote`, { run_id: form.dataset.run, by: fields.by, reason: fields.reason }];
    case "rollback":
      return [`/api/v1/models/${model}/rollback`, { by: fields.by, reason: fields.reason }];
    case "cycle":
      return [`/api/v1/models/${model}/cycles`, { by: fields.by || "" }];
    case "cancel":
      return [`/api/v1/jobs/${encodeURIComponent(form.dataset.job)}/cancel`, { by: fields.by, reason: fields.reason }];
    default:
      return null;
  }
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  const action = actionOf(form);
  if (!action) {
    return;
  }
  say("sending…", false);
  const { status, ok, answer } = await call(action[0], action[1]);
  if (ok) {
    say(`done (${status}); reloading`, false);
    window.setTimeout(() => window.location.reload(), 400);
    return;
  }
  if (status === 401) {
    document.getElementById("token-box").hidden = false;
    sessionStorage.removeItem(TOKEN_KEY);
    say(`refused (401): ${answer.error || "the bearer token is missing or wrong"}. Enter the token above and try again.`, true);
    return;
  }
  say(`refused (${status}): ${answer.error || "no reason given"}`, true);
}

// Running and queued jobs: their state, stage and progress every 2 s.
async function followJobs() {
  const live = document.querySelectorAll("table[data-live] tr[data-job]");
  if (live.length === 0) {
    return;
  }
  try {
    const response = await fetch("/api/v1/jobs?limit=1");
    const body = await response.json();
    const byId = new Map([...body.queued, ...body.running].map((job) => [job.id, job]));
    let ended = false;
    for (const row of live) {
      const job = byId.get(row.dataset.job);
      if (!job) {
        ended = true;
        continue;
      }
      row.querySelector(".state").textContent = job.state;
      row.querySelector(".phase").textContent = job.stage || "";
      row.querySelector("progress").value = job.progress;
    }
    if (ended) {
      window.location.reload();
      return;
    }
  } catch (_) {
    // The server is restarting or the network is down: try again later.
  }
  window.setTimeout(followJobs, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-action]")) {
    form.hidden = false;
    form.addEventListener("submit", submit);
  }
  for (const section of document.querySelectorAll("section.actions")) {
    section.hidden = false;
  }
  if (sessionStorage.getItem(TOKEN_KEY) === null && document.querySelector("form[data-action]")) {
    document.getElementById("token-box").hidden = false;
  }
  window.setTimeout(followJobs, 2000);
});
