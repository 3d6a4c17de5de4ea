// The task page's review workspace. Threads (findings and comments) arrive in one
// list (#task-threads, a live region) and are moved under the diff lines they name;
// a thread whose line is not shown stays in the list. Keyboard: n/p next/previous
// thread, j/k next/previous file, a accepts the focused finding, o goes to its
// overrule reason. A click on a line number (shift-click: a range) opens a comment.
(function () {
  "use strict";
  const page = document.querySelector("[data-workspace]");
  if (!page) return;
  let submitting = false; // one verdict at a time: the page reloads after each

  // --- threads at their lines ---------------------------------------------------

  function rowFor(slot) {
    const top = document.querySelector('.file-top[data-slot="' + CSS.escape(slot) + '"]');
    if (top) return { top };
    const row = document.querySelector('#files tr.ln[data-slots~="' + CSS.escape(slot) + '"]');
    return row ? { row } : null;
  }

  function place(item, where) {
    if (where.top) {
      where.top.appendChild(item);
      return;
    }
    let holder = where.row.nextElementSibling;
    if (!holder || !holder.classList.contains("thread-row")) {
      holder = document.createElement("tr");
      holder.className = "thread-row";
      const cell = document.createElement("td");
      cell.colSpan = where.row.children.length;
      holder.appendChild(cell);
      where.row.after(holder);
    }
    holder.firstElementChild.appendChild(item);
  }

  // The placed threads are outside the live region, so live.js cannot carry what was
  // typed in them (an overrule reason) into the fresh copies: do it here, by id, and
  // give the focus back, before the stale copies go.
  function keep(stale) {
    const kept = { values: new Map(), focusId: null };
    const active = document.activeElement;
    stale.forEach((el) => {
      el.querySelectorAll("input[id]:not([type=hidden]), textarea[id]").forEach((input) => {
        if (input.value) kept.values.set(input.id, input.value);
      });
      if (active && active.id && el.contains(active)) kept.focusId = active.id;
      el.remove();
    });
    return kept;
  }

  function restore(kept) {
    kept.values.forEach((value, id) => {
      const twin = document.getElementById(id);
      if (twin && !twin.value) twin.value = value;
    });
    const again = kept.focusId && document.getElementById(kept.focusId);
    if (again && (document.activeElement === document.body || !document.activeElement)) {
      again.focus({ preventScroll: true });
    }
  }

  function distribute() {
    const box = document.getElementById("task-threads");
    if (!box) return;
    let kept = null;
    if (!box.dataset.placed) {
      // a fresh list (page load or a live update): what was placed before is stale
      kept = keep(page.querySelectorAll("#files .thread-row, #files .file-top > .thread-item"));
      box.dataset.placed = "1";
    }
    box.querySelectorAll(":scope > .thread-item").forEach((item) => {
      const where = rowFor(item.dataset.slot);
      if (where) place(item, where);
    });
    if (kept) restore(kept);
    box.classList.toggle("empty", !box.querySelector(".thread-item"));
    // The diff is this page's; the threads are live: say when they are of a newer commit.
    const files = document.getElementById("files");
    const stale = files && files.querySelector(".stale-diff");
    if (stale) stale.hidden = !box.dataset.head || box.dataset.head === files.dataset.head;
  }

  distribute();
  document.body.addEventListener("htmx:wsAfterMessage", distribute);
  document.addEventListener("fleet:swapped", distribute);
  document.body.addEventListener("htmx:afterSwap", distribute); // a file loaded on demand

  // --- viewed marks -------------------------------------------------------------------

  page.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.classList.contains("viewed-form")) {
      submitting = true;
      return;
    }
    event.preventDefault();
    const data = new FormData(form);
    fetch(form.action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "HX-Request": "true" },
    }).then((r) => {
      if (!r.ok) return form.submit(); // let the server say why, on a page
      const viewed = data.get("viewed") === "1";
      const file = form.closest(".diff-file");
      file.classList.toggle("viewed", viewed);
      file.querySelector("details").open = !viewed;
      form.querySelector("input[name=viewed]").value = viewed ? "0" : "1";
      const button = form.querySelector("button");
      button.textContent = (viewed ? "☑" : "☐") + " Viewed";
      button.setAttribute("aria-pressed", String(viewed));
      const count = document.getElementById("viewed-count");
      if (count) count.textContent = page.querySelectorAll(".diff-file.viewed").length;
    });
  });

  // --- comments on a line or a range ------------------------------------------------

  let anchor = null; // the first line number clicked: {file, side, line}

  function closeForm() {
    page.querySelectorAll("tr.comment-row").forEach((el) => el.remove());
    page.querySelectorAll("td.num.picked").forEach((el) => el.classList.remove("picked"));
  }

  function openForm(cell, first, last) {
    const source = document.getElementById("comment-form");
    if (!source) return; // this person may not comment
    closeForm();
    const table = cell.closest("table");
    const side = cell.dataset.side;
    table.querySelectorAll('td.num[data-side="' + side + '"]').forEach((td) => {
      const n = Number(td.dataset.line);
      if (n >= first && n <= last) td.classList.add("picked");
    });
    const form = source.cloneNode(true);
    form.removeAttribute("id");
    form.querySelector("[name=path]").outerHTML =
      '<input type="hidden" name="path">';
    form.querySelector("[name=path]").value = table.dataset.path;
    form.querySelector("[name=side]").value = side;
    form.querySelector("[name=line_start]").value = first;
    form.querySelector("[name=line_end]").value = last;
    form.querySelectorAll("label").forEach((label) => {
      if (!label.querySelector("textarea")) label.hidden = true;
    });
    const title = document.createElement("p");
    title.className = "muted";
    title.textContent =
      "Comment on " + table.dataset.path + ":" + (first === last ? first : first + "–" + last) +
      (side === "old" ? " (old side)" : "");
    form.prepend(title);
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "small";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", closeForm);
    form.appendChild(cancel);
    const row = document.createElement("tr");
    row.className = "comment-row";
    const td = document.createElement("td");
    td.colSpan = cell.parentElement.children.length;
    td.appendChild(form);
    row.appendChild(td);
    let after = cell.parentElement;
    while (after.nextElementSibling && after.nextElementSibling.classList.contains("thread-row"))
      after = after.nextElementSibling;
    after.after(row);
    form.querySelector("textarea").focus();
  }

  page.addEventListener("click", (event) => {
    const cell = event.target.closest("#files td.num[data-line]");
    if (!cell) return;
    const here = {
      file: cell.closest("table").dataset.file,
      side: cell.dataset.side,
      line: Number(cell.dataset.line),
    };
    if (event.shiftKey && anchor && anchor.file === here.file && anchor.side === here.side) {
      openForm(cell, Math.min(anchor.line, here.line), Math.max(anchor.line, here.line));
    } else {
      anchor = here;
      openForm(cell, here.line, here.line);
    }
    event.preventDefault();
  });

  // --- keyboard ------------------------------------------------------------------------

  const threads = () => Array.from(page.querySelectorAll(".thread-item"));
  const files = () => Array.from(page.querySelectorAll(".diff-file"));

  function focusOn(el) {
    if (!el) return;
    const target = el.querySelector(".finding, .comment") || el;
    page.querySelectorAll(".selected").forEach((s) => s.classList.remove("selected"));
    target.classList.add("selected");
    const details = el.closest("details");
    if (details) details.open = true;
    target.focus();
    target.scrollIntoView({ block: "center" });
  }

  function step(list, current, by) {
    if (!list.length) return null;
    const i = list.indexOf(current);
    if (i < 0) return list[by > 0 ? 0 : list.length - 1];
    return list[Math.max(0, Math.min(i + by, list.length - 1))];
  }

  // After a verdict the page comes back at #finding-N: start from there.
  const hash = decodeURIComponent(window.location.hash.slice(1));
  const start = hash && document.getElementById(hash);
  if (start && start.closest(".thread-item")) focusOn(start.closest(".thread-item"));

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target.closest("input, textarea, select")) {
      if (event.key === "Escape") {
        const thread = event.target.closest(".thread-item");
        if (thread) focusOn(thread);
        else if (event.target.closest(".comment-row")) closeForm();
      }
      return;
    }
    if (submitting) return;
    const active = document.activeElement;
    const thread = active && active.closest(".thread-item");
    const file = active && active.closest(".diff-file");
    const finding = thread && thread.querySelector(".finding");
    if (event.key === "n" || event.key === "p") {
      focusOn(step(threads(), thread, event.key === "n" ? 1 : -1));
    } else if (event.key === "j" || event.key === "k") {
      const next = step(files(), file, event.key === "j" ? 1 : -1);
      if (next) {
        next.focus();
        next.scrollIntoView({ block: "start" });
      }
    } else if (event.key === "a" && finding) {
      const form = finding.querySelector("form.accept");
      if (form) {
        submitting = true;
        form.requestSubmit();
      }
    } else if (event.key === "o" && finding) {
      const reason = finding.querySelector("form.overrule input[name=reason]");
      if (reason) reason.focus();
    } else return;
    event.preventDefault();
  });
})();
