// Attention: a person who opts in (the "Notify me" button; remembered in this browser)
// gets a browser notification when the live socket says something newly needs them
// in their role. The server picks what and for whom; this only shows it, once per
// event however many tabs are open.
(function () {
  "use strict";
  const KEY = "fleet-attention";
  const button = document.getElementById("attention-optin");
  if (!button || !("Notification" in window)) return;

  function on() {
    return Notification.permission === "granted" && localStorage.getItem(KEY) === "on";
  }

  function label() {
    button.textContent = on() ? "Notifications on" : "Notify me";
    button.setAttribute("aria-pressed", on() ? "true" : "false");
    button.title = on()
      ? "Click to stop notifications in this browser"
      : "A browser notification when something newly needs you in your role";
  }

  button.hidden = Notification.permission === "denied";
  label();
  button.addEventListener("click", () => {
    if (on()) {
      localStorage.removeItem(KEY);
      label();
      return;
    }
    Promise.resolve(Notification.requestPermission()).then((permission) => {
      if (permission === "granted") localStorage.setItem(KEY, "on");
      button.hidden = permission === "denied";
      label();
    });
  });

  const shown = new Set();
  function notify() {
    const box = document.getElementById("fleet-attention");
    if (!box || !on()) return;
    for (const item of box.querySelectorAll("[data-id]")) {
      const id = item.dataset.id;
      if (shown.has(id)) continue;
      shown.add(id);
      // The tag makes the browser show one notification per event across tabs.
      const note = new Notification(item.dataset.title, { body: item.dataset.body, tag: "fleet-" + id });
      note.onclick = () => {
        window.focus();
        window.location.href = item.dataset.url;
      };
    }
  }
  document.body.addEventListener("htmx:wsAfterMessage", notify);
})();
