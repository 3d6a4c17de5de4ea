// The review queue from the keyboard: j/k move between findings, a accepts the
// current one (the finding that has the focus), o puts the cursor in its overrule
// reason (Enter overrules, Escape goes back to the list).
(function () {
  "use strict";
  const queue = document.querySelector("[data-review-queue]");
  if (!queue) return;
  const findings = () => Array.from(queue.querySelectorAll(".finding"));
  let submitting = false; // one verdict at a time: the page reloads after each

  function currentIndex() {
    const here = document.activeElement && document.activeElement.closest(".finding");
    return here ? findings().indexOf(here) : -1;
  }

  function select(index) {
    const all = findings();
    if (!all.length) return;
    const i = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((el, n) => el.classList.toggle("selected", n === i));
    all[i].focus();
    all[i].scrollIntoView({ block: "nearest" });
  }

  // After a verdict the page comes back at #finding-N: start from there.
  const hash = decodeURIComponent(window.location.hash.slice(1));
  const start = hash && document.getElementById(hash);
  if (start && start.classList.contains("finding")) select(findings().indexOf(start));

  queue.addEventListener("submit", () => { submitting = true; });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target.closest("input, textarea, select")) {
      if (event.key === "Escape") {
        const finding = event.target.closest(".finding");
        if (finding) finding.focus();
      }
      return;
    }
    if (submitting) return;
    const i = currentIndex();
    const here = i >= 0 ? findings()[i] : null;
    if (event.key === "j") select(i + 1);
    else if (event.key === "k") select(i < 0 ? 0 : i - 1);
    else if (event.key === "a" && here) {
      const form = here.querySelector("form.accept");
      if (form) { submitting = true; form.requestSubmit(); }
    } else if (event.key === "o" && here) {
      const reason = here.querySelector("form.overrule input[name=reason]");
      if (reason) reason.focus();
    } else return;
    event.preventDefault();
  });
})();
