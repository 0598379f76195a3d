// Ursa's dashboard script: live status, confirmations, the project
// switcher, the Launch Instance wizard's steps and uploads (images,
// objects) with progress: a form with a file is sent as one PUT of the
// file to its `data-upload` URL, its other fields in the query. Loaded from /dashboard/static (the Content-Security-Policy
// allows no inline script); every page works without it.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

// Rows whose state changes by itself (BUILD, attaching, …) are polled
// until they settle; their status cells change in place.
function poll(table) {
  const url = table.dataset.poll;
  const tick = async () => {
    const busy = [...table.querySelectorAll("tr[data-busy]")];
    if (busy.length === 0) return;
    const q = busy.map((r) => "&id=" + encodeURIComponent(r.dataset.id)).join("");
    try {
      const resp = await fetch(url + q, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.ok) {
        const states = await resp.json();
        for (const row of busy) {
          const s = states[row.dataset.id];
          if (!s) continue;
          for (const [field, text] of Object.entries(s.fields)) {
            const cell = row.querySelector('td[data-field="' + field + '"]');
            if (cell && cell.textContent !== text) cell.textContent = text;
          }
          row.dataset.status = s.status;
          if (!s.busy) row.removeAttribute("data-busy");
        }
      }
    } catch (e) {
      // The next tick tries again.
    }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 1500);
}

function wizard(form) {
  const steps = [...form.querySelectorAll("fieldset[data-step]")];
  const list = form.querySelector("ol.steps");
  let at = 0;
  const show = (i) => {
    at = Math.max(0, Math.min(steps.length - 1, i));
    steps.forEach((s, j) => (s.hidden = j !== at));
    [...list.children].forEach((li, j) => li.classList.toggle("here", j === at));
  };
  steps.forEach((s, j) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = s.dataset.step;
    a.addEventListener("click", (e) => {
      e.preventDefault();
      show(j);
    });
    li.appendChild(a);
    list.appendChild(li);
  });
  form.querySelector('[data-wizard="next"]').addEventListener("click", () => show(at + 1));
  form.querySelector('[data-wizard="back"]').addEventListener("click", () => show(at - 1));
  // A required field on a hidden step: show that step.
  form.addEventListener(
    "invalid",
    (e) => {
      const s = e.target.closest("fieldset[data-step]");
      if (s) show(steps.indexOf(s));
    },
    true
  );
  show(0);
}

function upload(form) {
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = form.querySelector('input[type="file"]').files[0];
    if (!file) return;
    const q = new URLSearchParams();
    for (const el of form.querySelectorAll("input[name], select[name]")) {
      if (el.type !== "file" && el.type !== "hidden") q.set(el.name, el.value);
    }
    const bar = form.querySelector("progress");
    const state = form.querySelector(".upload-state");
    bar.hidden = false;
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", form.dataset.upload + "?" + q.toString());
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (p) => {
      if (p.lengthComputable) {
        bar.value = Math.round((100 * p.loaded) / p.total);
        state.textContent = bar.value + "%";
      }
    });
    xhr.addEventListener("load", () => {
      let msg = "";
      let next = location.pathname;
      try {
        const a = JSON.parse(xhr.responseText);
        msg = a.message || "";
        next = a.next || next;
      } catch (err) {
        msg = xhr.statusText;
      }
      if (xhr.status === 201) {
        location.href = next + "?ok=" + encodeURIComponent(msg);
      } else {
        state.textContent = "Error: " + msg;
      }
    });
    xhr.addEventListener("error", () => (state.textContent = "Error: the upload failed."));
    xhr.send(file);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table[data-poll]").forEach(poll);
  document.querySelectorAll("form[data-confirm]").forEach((f) =>
    f.addEventListener("submit", (e) => {
      if (!confirm(f.dataset.confirm)) e.preventDefault();
    })
  );
  document.querySelectorAll("select[data-autosubmit]").forEach((s) =>
    s.addEventListener("change", () => s.form.submit())
  );
  document.querySelectorAll("form.wizard").forEach(wizard);
  document.querySelectorAll("form[data-upload]").forEach(upload);
});
