// The dashboard: GET /activity (admin) every 2 seconds, drawn as three tables.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 2000;
  let timer = null;

  document.addEventListener("inferbox:token", refresh);
  refresh();

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch("/activity", { headers: inferbox.headers() });
      if (response.ok) {
        draw(await response.json());
        inferbox.show($("error"), "");
        $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      } else {
        const hint = response.status === 401 || response.status === 403
          ? " — type an admin token above" : "";
        inferbox.show($("error"), (await inferbox.errorText(response)) + hint);
      }
    } catch (err) {
      inferbox.show($("error"), "the broker did not answer: " + err.message);
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function rows(tableId, items, fill, empty) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    for (const item of items) fill(body.insertRow(), item);
    if (!items.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = $(tableId).tHead.rows[0].cells.length;
      td.className = "muted";
      td.textContent = empty;
    }
  }

  function draw(data) {
    const { cell, age, since } = inferbox;
    $("webhook-backlog").textContent = data.webhook_backlog;
    rows("queues", data.queues, (row, q) => {
      cell(row, q.name, "name");
      cell(row, q.depth, q.depth > 0 ? "num busy" : "num");
      cell(row, q.in_flight, "num");
      cell(row, age(q.oldest_age_seconds), "num");
      cell(row, q.finished_per_minute, "num");
      for (const name of ["submitted", "succeeded", "failed", "redelivered", "canceled", "expired"]) {
        cell(row, q[name], "num");
      }
    }, "No queue has been used yet.");
    rows("workers", data.workers, (row, w) => {
      cell(row, w.worker_id, "name");
      cell(row, w.alive ? "alive" : "gone", w.alive ? "alive" : "gone");
      cell(row, w.queues.join(", "));
      cell(row, since(w.last_seen));
      cell(row, w.tasks_done, "num");
      cell(row, w.tasks_failed, "num");
      cell(row, w.model_version || "—");
    }, "No worker seen in the last hour.");
    rows("failures", data.failures, (row, f) => {
      cell(row, since(f.at));
      cell(row, f.task_id, "mono");
      cell(row, f.queue);
      cell(row, f.worker_id || "—");
      cell(row, f.attempt, "num");
      cell(row, f.final ? "failed" : "retried", f.final ? "gone" : "");
      const pre = document.createElement("pre");
      pre.textContent = f.error;
      row.insertCell().appendChild(pre);
    }, "No failures recorded.");
  }
})();
