// fluxnb dashboard and gallery: poll the page's state route once a second and swap in the
// server-rendered (escaped) sections; the buttons POST actions with the page's CSRF token.
"use strict";
(function () {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const csrf = meta("fluxnb-csrf");
  const stateUrl = meta("fluxnb-state");
  const notice = () => document.getElementById("notice");

  function say(text, bad) {
    const n = notice();
    if (!n) return;
    n.textContent = text;
    n.className = bad ? "bad" : "ok";
    n.hidden = !text;
  }

  let busy = false;
  async function refresh() {
    if (busy || !stateUrl) return;
    busy = true;
    try {
      const r = await fetch(stateUrl, {credentials: "same-origin", cache: "no-store",
                                       headers: {"Accept": "application/json"}});
      if (r.status === 401 || r.status === 403) { say("Your login ended: reload the page to log in again.", true); return; }
      if (!r.ok) return;
      const body = await r.json();
      for (const [id, html] of Object.entries(body.sections || {})) {
        const el = document.getElementById(id);
        if (el && el.innerHTML !== html) el.innerHTML = html;  // html was escaped by the server
      }
      document.body.dataset.updated = String(body.updated || "");
    } catch (e) {
      say("The server does not answer (is it still running?)", true);
    } finally {
      busy = false;
    }
  }

  async function act(button) {
    const action = button.dataset.action;
    const payload = {};
    if (button.dataset.id) payload.id = button.dataset.id;
    if (button.dataset.owner) payload.owner = button.dataset.owner;
    button.disabled = true;
    try {
      const r = await fetch(`/_fluxnb/dashboard/${action}`, {
        method: "POST", credentials: "same-origin", body: JSON.stringify(payload),
        headers: {"Content-Type": "application/json", "X-Fluxnb-CSRF": csrf}});
      let body = {};
      try { body = await r.json(); } catch (e) { body = {}; }
      say(r.ok ? (body.message || "Done") : (body.detail || `Refused (${r.status})`), !r.ok);
    } catch (e) {
      say("The server does not answer (is it still running?)", true);
    } finally {
      button.disabled = false;
      refresh();
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });
  if (stateUrl) setInterval(refresh, 1000);
})();
