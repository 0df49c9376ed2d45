// The "try it" page: submit a payload, follow the task with long-polls, show the result.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const FINAL = { 409: "canceled", 410: "expired", 424: "failed" };
  let watching = 0; // a new submit stops the previous watch
  let resultUrl = null;

  document.querySelectorAll('input[name="kind"]').forEach((radio) =>
    radio.addEventListener("change", () => {
      const file = document.querySelector('input[name="kind"]:checked').value === "file";
      $("file-input").hidden = !file;
      $("text-input").hidden = file;
    }));
  $("submit-form").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  document.addEventListener("inferbox:token", loadQueues);
  loadQueues();

  // Queue names for the picker: only an admin token (or an open broker) may list them.
  async function loadQueues() {
    const response = await fetch("/queues", { headers: inferbox.headers() }).catch(() => null);
    if (!response || !response.ok) return;
    const list = $("queue-names");
    list.replaceChildren(...(await response.json()).queues.map((q) => new Option(q.name)));
  }

  function payload() {
    if (document.querySelector('input[name="kind"]:checked').value === "file") {
      const file = $("file").files[0];
      if (!file) throw new Error("choose a file first");
      return { body: file, type: file.type || "application/octet-stream" };
    }
    const text = $("payload").value;
    try {
      JSON.parse(text);
      return { body: text, type: "application/json" };
    } catch (_) {
      return { body: text, type: "text/plain; charset=utf-8" };
    }
  }

  async function submit() {
    inferbox.show($("error"), "");
    let body;
    try { body = payload(); } catch (err) { inferbox.show($("error"), err.message); return; }
    $("submit").disabled = true;
    try {
      const url = "/predict?queue=" + encodeURIComponent($("queue").value.trim());
      const response = await fetch(url, {
        method: "POST", body: body.body, headers: inferbox.headers({ "Content-Type": body.type }),
      });
      if (!response.ok) { inferbox.show($("error"), await inferbox.errorText(response)); return; }
      const doc = await response.json();
      resetTask(doc);
      watch(doc.task_id, ++watching);
    } catch (err) {
      inferbox.show($("error"), "the broker did not answer: " + err.message);
    } finally {
      $("submit").disabled = false;
    }
  }

  // Long-poll /getresult: a 202 brings the status (and progress) at least every 2 s; the
  // result comes the moment the worker posts it.
  async function watch(taskId, generation) {
    while (generation === watching) {
      let response;
      try {
        response = await fetch(`/getresult/${taskId}?wait=2`, { headers: inferbox.headers() });
      } catch (err) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      if (response.status === 200) {
        await showResult(response);
        const info = await fetch(`/tasks/${taskId}`, { headers: inferbox.headers() });
        if (info.ok) showTask(await info.json());
        return;
      }
      if (response.status === 202) { showTask(await response.json()); continue; }
      if (FINAL[response.status]) {
        const doc = await response.json();
        showTask(doc);
        inferbox.show($("task-error"), doc.error || `the task ended ${doc.status}`);
        return;
      }
      inferbox.show($("task-error"), await inferbox.errorText(response));
      return;
    }
  }

  function resetTask(doc) {
    $("task").hidden = false;
    $("result").hidden = true;
    $("result-body").replaceChildren();
    inferbox.show($("task-error"), "");
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = null;
    showTask(doc);
  }

  function showTask(doc) {
    $("task-id").textContent = doc.task_id;
    const status = $("task-status");
    status.textContent = doc.status;
    status.className = "badge " + doc.status;
    $("task-queue").textContent = doc.queue;
    $("task-attempts").textContent = `${doc.attempts} of ${doc.max_attempts}`;
    $("task-worker").textContent = doc.worker_id || "—";
    $("task-model").textContent = doc.model_version || "—";
    const progress = doc.progress || { fraction: 0, message: "" };
    $("task-progress").value = progress.fraction;
    $("task-progress-text").textContent =
      `${Math.round(progress.fraction * 100)} %` + (progress.message ? ` · ${progress.message}` : "");
  }

  async function showResult(response) {
    const type = response.headers.get("Content-Type") || "application/octet-stream";
    const blob = await response.blob();
    const out = $("result-body");
    $("result-type").textContent = `${type}, ${blob.size} bytes`;
    const media = type.split(";")[0].trim().toLowerCase();
    if (media === "application/json" || media.endsWith("+json")) {
      const pre = document.createElement("pre");
      const text = await blob.text();
      try { pre.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { pre.textContent = text; }
      out.replaceChildren(pre);
    } else if (media.startsWith("image/")) {
      resultUrl = URL.createObjectURL(blob);
      const img = document.createElement("img");
      img.src = resultUrl;
      img.alt = "the result image";
      out.replaceChildren(img);
    } else if (media.startsWith("text/")) {
      const pre = document.createElement("pre");
      pre.textContent = await blob.text();
      out.replaceChildren(pre);
    } else {
      resultUrl = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = resultUrl;
      link.download = `${$("task-id").textContent}.bin`;
      link.textContent = `Download the result (${blob.size} bytes)`;
      out.replaceChildren(link);
    }
    $("result").hidden = false;
  }
})();
