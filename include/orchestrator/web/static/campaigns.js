// The Campaigns view's only script (no inline scripts: the pages' CSP forbids them).
// 1. Times: the server writes UTC; show them in the viewer's time zone (Airflow UI's choice), UTC as tooltip.
// 2. The decision form: posts to the campaign decision API with the session cookie, as JSON.
"use strict";

function viewerZone() {
  // The zone chosen in Airflow's UI (its time zone menu keeps it in localStorage, JSON-encoded),
  // else the browser's. This page is same-origin with Airflow's UI, so it shares the storage.
  try {
    const chosen = JSON.parse(window.localStorage.getItem("timezone") || "null");
    if (chosen) {
      new Intl.DateTimeFormat(undefined, { timeZone: chosen });  // throws on an unknown zone
      return chosen;
    }
  } catch (error) { /* no storage, or not a zone: fall back */ }
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

function localTimes() {
  const format = new Intl.DateTimeFormat(undefined, {
    timeZone: viewerZone(), year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  for (const el of document.querySelectorAll("time[datetime]")) {
    const when = new Date(el.dateTime);
    if (Number.isNaN(when.getTime())) continue;
    el.title = el.textContent;
    el.textContent = format.format(when);
  }
}

function decisionForm() {
  const form = document.getElementById("decision");
  if (!form) return;
  const result = document.getElementById("decision-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const decision = event.submitter ? event.submitter.value : "approve";
    const reason = form.elements.reason.value.trim();
    if (decision === "reject" && !reason) {
      result.textContent = "A rejection needs a reason.";
      result.className = "error";
      form.elements.reason.focus();
      return;
    }
    const copy = {};
    for (const el of form.querySelectorAll("[data-original]")) {
      if (el.value !== el.dataset.original) copy[el.name] = el.value;
    }
    if (decision === "reject" && Object.keys(copy).length) {
      result.textContent = "Edits are kept only with an approval: undo them or approve.";
      result.className = "error";
      return;
    }
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    result.className = "";
    result.textContent = "Sending…";
    try {
      const answer = await fetch(form.dataset.api, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ decision, reason, copy }),
      });
      const body = await answer.json().catch(() => ({}));
      if (!answer.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || answer.statusText));
      result.textContent = `Recorded: ${body.decision} by ${body.by}.`;
      setTimeout(() => window.location.reload(), 800);
    } catch (error) {
      result.textContent = `Not recorded: ${error.message}`;
      result.className = "error";
      for (const button of form.querySelectorAll("button")) button.disabled = false;
    }
  });
}

localTimes();
decisionForm();
