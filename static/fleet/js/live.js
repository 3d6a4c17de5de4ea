// Live regions: the websocket (htmx's ws extension swaps each fragment in by id);
// when it is down or blocked, poll the page's ?live=1 snapshot instead. The
// indicator says which: live / reconnecting / polling / stale.
(function () {
  "use strict";
  const root = document.querySelector("[data-live-view]");
  const indicator = document.getElementById("live-indicator");
  if (!root || !indicator) return;
  const POLL_MS = 3000;
  let open = false;
  let pollTimer = null;

  function show(state, text) {
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  function swapAll(html) {
    const holder = document.createElement("template");
    holder.innerHTML = html;
    for (const el of Array.from(holder.content.children)) {
      const old = el.id && document.getElementById(el.id);
      if (old) {
        old.replaceWith(el);
        if (window.htmx) window.htmx.process(el);
      }
    }
  }

  function poll() {
    fetch(root.dataset.livePoll, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status))))
      .then((html) => {
        swapAll(html);
        if (!open) show("polling", "live (polling)");
      })
      .catch(() => {
        if (!open) show("stale", "stale");
      });
  }

  function startPolling() {
    if (pollTimer || open) return;
    poll();
    pollTimer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  function lost() {
    open = false;
    show("reconnecting", "reconnecting…");
    setTimeout(() => { if (!open) startPolling(); }, POLL_MS);
  }

  document.body.addEventListener("htmx:wsOpen", () => {
    open = true;
    stopPolling();
    show("live", "live");
  });
  document.body.addEventListener("htmx:wsClose", lost);
  document.body.addEventListener("htmx:wsError", lost);
  // No socket at all after a few seconds (a proxy blocks it): poll.
  setTimeout(() => { if (!open) startPolling(); }, POLL_MS + 1000);
})();
