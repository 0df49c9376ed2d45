// Shared by the pages: the token field (kept in this tab's sessionStorage) and API calls.
"use strict";

const inferbox = (() => {
  const tokenField = document.getElementById("token");
  tokenField.value = sessionStorage.getItem("inferbox.token") || "";
  tokenField.addEventListener("change", () => {
    sessionStorage.setItem("inferbox.token", tokenField.value.trim());
    document.dispatchEvent(new Event("inferbox:token"));
  });

  function headers(extra) {
    const token = tokenField.value.trim();
    return Object.assign(token ? { Authorization: "Bearer " + token } : {}, extra || {});
  }

  // The API's error body {error, message} as one line of text.
  async function errorText(response) {
    try {
      const body = await response.json();
      return `${response.status} ${body.error}: ${body.message}`;
    } catch (_) {
      return `${response.status} ${response.statusText}`;
    }
  }

  function show(element, text) {
    element.textContent = text || "";
    element.hidden = !text;
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text === null || text === undefined ? "—" : String(text);
    if (className) td.className = className;
    return td;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function since(iso) {
    if (!iso) return "—";
    return `${age(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`;
  }

  return { headers, errorText, show, cell, age, since };
})();
