// Live regions: the websocket (htmx's ws extension swaps each fragment in by id);
// when it is down or blocked, poll the page's ?live=1 snapshot instead. The
// indicator says which: live / reconnecting / polling / stale.
(function () {
  "use strict";
  const root = document.querySelector("[data-live-view]");
  const indicator = document.getElementById("live-indicator");
  if (!root || !indicator) return;
  const POLL_MS = 3000;
  // htmx retries a lost socket with exponential backoff (up to a minute by default):
  // cap it at 2.5 s, jittered, so a page is live again within 5 s of the server (or its
  // channel layer) coming back, without a storm of reconnects at one instant.
  if (window.htmx) {
    window.htmx.config.wsReconnectDelay = (retry) =>
      Math.min(2500, 500 * 2 ** retry) * (0.5 + Math.random() / 2);
  }
  let open = false;
  let pollTimer = null;
  let inFlight = null;

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
    document.dispatchEvent(new CustomEvent("fleet:swapped"));
  }

  function poll() {
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    fetch(root.dataset.livePoll, {
      credentials: "same-origin",
      redirect: "manual", // signed out: the login page is not a snapshot
      headers: { "HX-Request": "true" },
      signal: inFlight.signal,
    })
      .then((r) =>
        r.ok && r.headers.get("X-Fleet-Live") === "1"
          ? r.text()
          : Promise.reject(new Error("not a live snapshot: " + r.status))
      )
      .then((html) => {
        if (open) return; // the socket is back with newer state
        swapAll(html);
        show("polling", "live (polling)");
      })
      .catch((err) => {
        if (!open && err.name !== "AbortError") show("stale", "stale: reload the page");
      });
  }

  function startPolling() {
    if (pollTimer || open) return;
    poll();
    pollTimer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer);
    if (inFlight) inFlight.abort();
    pollTimer = null;
    inFlight = null;
  }

  // Close codes after which htmx's ws extension reconnects by itself (with backoff).
  const RETRIED_BY_HTMX = [1006, 1011, 1012, 1013];
  let retryTimer = null;

  function lost(event) {
    open = false;
    show("reconnecting", "reconnecting…");
    setTimeout(() => { if (!open) startPolling(); }, POLL_MS);
    // After any other (clean) close, try again later ourselves: one timer at a time,
    // so retries never multiply while the server is away.
    const detail = (event && event.detail) || {};
    const code = detail.event && detail.event.code;
    const wrapper = detail.socketWrapper;
    if (event.type !== "htmx:wsClose" || RETRIED_BY_HTMX.includes(code)) return;
    if (!wrapper || typeof wrapper.reconnect !== "function") return;
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      retryTimer = null;
      if (!open) wrapper.reconnect();
    }, 10 * POLL_MS);
  }

  document.body.addEventListener("htmx:wsOpen", () => {
    open = true;
    unacked = 0; // a new connection counts afresh (its snapshot comes next)
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = null;
    stopPolling();
    show("live", "live");
  });
  // Acknowledge the frames swapped in, a few at a time (at most twice a second): the
  // server sends a page that stopped reading (a sleeping laptop, a stalled tab)
  // nothing more until it catches up.
  let unacked = 0;
  let ackTimer = null;
  document.body.addEventListener("htmx:wsAfterMessage", (event) => {
    const wrapper = event.detail && event.detail.socketWrapper;
    if (!wrapper) return;
    unacked += 1;
    if (ackTimer) return;
    ackTimer = setTimeout(() => {
      ackTimer = null;
      if (unacked && open) wrapper.send("ack:" + unacked);
      unacked = 0;
    }, 500);
  });
  document.body.addEventListener("htmx:wsClose", lost);
  document.body.addEventListener("htmx:wsError", lost);
  // No socket at all after a few seconds (a proxy blocks it): poll.
  setTimeout(() => { if (!open) startPolling(); }, POLL_MS + 1000);
})();

// Heartbeat ages move on by themselves: each age shown ticks on from the one it had
// when it was rendered (data-age, seconds), its colour turning amber at half the
// heartbeat lease and red at its end (data-ttl), until a newer pulse replaces it. The
// server sends no frame for an age.
(function () {
  "use strict";
  const HEALTH = ["hb-ok", "hb-amber", "hb-red"];

  function ageText(seconds) {
    if (seconds < 60) return seconds + "s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
    return Math.floor(seconds / 86400) + "d ago";
  }

  function tick() {
    const now = Date.now(); // (it counts while the computer sleeps; performance.now may not)
    for (const el of document.querySelectorAll(".hb[data-age]")) {
      if (!el.dataset.since) el.dataset.since = String(now);
      const age = Number(el.dataset.age) + (now - Number(el.dataset.since)) / 1000;
      const seconds = Math.max(0, Math.floor(age));
      const ttl = Number(el.dataset.ttl);
      if (!Number.isFinite(seconds) || !Number.isFinite(ttl)) continue;
      const text = ageText(seconds);
      if (el.textContent !== text) el.textContent = text;
      const health = seconds >= ttl ? "hb-red" : seconds >= ttl / 2 ? "hb-amber" : "hb-ok";
      for (const name of HEALTH) el.classList.toggle(name, name === health);
    }
  }

  // New pulses start counting as soon as they are in (not up to a second later).
  document.addEventListener("htmx:wsAfterMessage", tick);
  document.addEventListener("fleet:swapped", tick);
  tick();
  setInterval(tick, 1000);
})();

// A live frame replaces whole regions, which people may be working in (a reason being
// typed in the review queue): carry what they typed into the new region, and give the
// focus back to the element of the same id.
(function () {
  "use strict";
  let focusId = null;
  document.addEventListener("htmx:oobBeforeSwap", (event) => {
    const { target, fragment } = event.detail || {};
    if (!target || !fragment || !fragment.querySelector) return;
    const active = document.activeElement;
    if (active && active.id && target.contains(active)) focusId = active.id;
    for (const input of target.querySelectorAll("input[id]:not([type=hidden]), textarea[id]")) {
      if (!input.value) continue;
      const twin = fragment.querySelector("#" + CSS.escape(input.id));
      if (twin && !twin.value) twin.value = input.value;
    }
  });
  document.addEventListener("htmx:wsAfterMessage", () => {
    if (!focusId) return;
    const again = document.getElementById(focusId);
    focusId = null;
    if (again && (document.activeElement === document.body || !document.activeElement)) {
      again.focus({ preventScroll: true });
    }
  });
})();

// Forms inside live regions are rendered once for every viewer, so they carry no
// CSRF token of their own: add this page's token (the one htmx sends) on submit.
document.addEventListener(
  "submit",
  (event) => {
    const form = event.target;
    if (form.method.toLowerCase() !== "post" || form.querySelector("[name=csrfmiddlewaretoken]")) return;
    let token = "";
    try {
      token = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (err) {
      return;
    }
    if (!token) return;
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "csrfmiddlewaretoken";
    input.value = token;
    form.appendChild(input);
  },
  true
);
