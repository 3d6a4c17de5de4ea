// The review queue from the keyboard: j/k move between findings, a accepts the
// current one, o puts the cursor in its overrule reason (Enter overrules).
(function () {
  "use strict";
  const queue = document.querySelector("[data-review-queue]");
  if (!queue) return;
  const findings = () => Array.from(queue.querySelectorAll(".finding"));
  let current = -1;

  function select(index) {
    const all = findings();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((el, i) => el.classList.toggle("selected", i === current));
    all[current].focus();
    all[current].scrollIntoView({ block: "nearest" });
  }

  // After a verdict the page comes back at #finding-N: start from there.
  const start = window.location.hash && document.querySelector(window.location.hash);
  if (start) select(findings().indexOf(start));

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const typing = event.target.closest("input, textarea, select");
    if (typing) return;
    const all = findings();
    const here = all[current];
    if (event.key === "j") select(current + 1);
    else if (event.key === "k") select(current - 1);
    else if (event.key === "a" && here) {
      const button = here.querySelector("form.accept button");
      if (button) button.click();
    } else if (event.key === "o" && here) {
      const reason = here.querySelector("form.overrule input[name=reason]");
      if (reason) reason.focus();
    } else return;
    event.preventDefault();
  });
})();
