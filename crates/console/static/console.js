// Aether console: the little interaction the pages need. Everything works without it.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem("aether-theme"); } catch (e) { /* private mode */ }
  if (saved === "light" || saved === "dark") root.setAttribute("data-theme", saved);

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-theme-toggle]").forEach(function (b) {
      b.addEventListener("click", function () {
        var dark = root.getAttribute("data-theme") === "dark" ||
          (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
        var next = dark ? "light" : "dark";
        root.setAttribute("data-theme", next);
        try { localStorage.setItem("aether-theme", next); } catch (e) { /* ignore */ }
      });
    });
    // Click a shown-once secret to copy it.
    document.querySelectorAll("[data-copy]").forEach(function (el) {
      el.addEventListener("click", function () {
        if (navigator.clipboard) navigator.clipboard.writeText(el.textContent.trim());
        el.setAttribute("data-copied", "true");
      });
    });
    // Buttons of long operations show progress until the page answers.
    document.querySelectorAll("form[data-progress]").forEach(function (f) {
      f.addEventListener("submit", function () {
        var b = f.querySelector("button[type=submit]");
        if (b) { b.disabled = true; b.textContent = f.getAttribute("data-progress"); }
      });
    });
  });
})();

// ---- pricing editor (admin/model_tiers.html): "Add tier" appends an empty row ----
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-add-tier]").forEach(function (button) {
      var table = button.parentNode.querySelector("table[data-tier-editor]");
      if (!table) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        var rows = table.querySelectorAll("tr[data-tier-row]");
        var last = rows[rows.length - 1];
        if (!last) return;
        var n = 0;
        table.querySelectorAll("input[name]").forEach(function (input) {
          var m = /_(\d+)$/.exec(input.name);
          if (m) n = Math.max(n, parseInt(m[1], 10) + 1);
        });
        var row = last.cloneNode(true);
        row.querySelectorAll("input").forEach(function (input) {
          input.name = input.name.replace(/_\d+$/, "_" + n);
          input.value = "";
          var label = input.getAttribute("aria-label");
          if (label) input.setAttribute("aria-label", label.replace(/^Tier \d+/, "Tier " + (rows.length + 1)));
        });
        table.tBodies[0].appendChild(row);
        var first = row.querySelector("input");
        if (first) first.focus();
      });
    });
  });
})();

// ---- provider models: the name-mapping editor (admin/provider_forms.html) ----
// "Add mapping" appends an empty row with the next free index; "Remove" drops a row (the
// last one is emptied instead). Without the script, an empty row adds and "remove" drops.
(function () {
  "use strict";
  function renumber(row, n, position) {
    row.querySelectorAll("input").forEach(function (input) {
      input.name = input.name.replace(/_\d+$/, "_" + n);
      if (input.type === "checkbox") input.checked = false; else input.value = "";
      var label = input.getAttribute("aria-label");
      if (label) input.setAttribute("aria-label", label.replace(/^Mapping \d+/, "Mapping " + position));
    });
  }
  function wire(row, table) {
    var box = row.querySelector("[data-map-remove-box]");
    if (box) box.hidden = true;
    var remove = row.querySelector("[data-remove-map]");
    if (!remove) return;
    remove.hidden = false;
    remove.addEventListener("click", function () {
      if (table.querySelectorAll("tr[data-map-row]").length > 1) {
        var next = row.nextElementSibling;
        if (next && next.classList.contains("tier-error")) next.remove();
        row.remove();
      } else {
        row.querySelectorAll("input:not([type=checkbox])").forEach(function (i) { i.value = ""; });
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-add-map]").forEach(function (button) {
      var table = button.parentNode.querySelector("table[data-map-editor]");
      if (!table) return;
      table.querySelectorAll("tr[data-map-row]").forEach(function (row) { wire(row, table); });
      button.hidden = false;
      button.addEventListener("click", function () {
        var rows = table.querySelectorAll("tr[data-map-row]");
        var last = rows[rows.length - 1];
        if (!last) return;
        var n = 0;
        table.querySelectorAll("input[name]").forEach(function (input) {
          var m = /_(\d+)$/.exec(input.name);
          if (m) n = Math.max(n, parseInt(m[1], 10) + 1);
        });
        var row = last.cloneNode(true);
        renumber(row, n, rows.length + 1);
        table.tBodies[0].appendChild(row);
        wire(row, table);
        var first = row.querySelector("input");
        if (first) first.focus();
      });
    });
  });
})();

// ---- settings: configuration import (admin/settings.html) — a chosen file is read into the
// document box; while the import runs the button is disabled and shows the elapsed seconds ----
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-import]").forEach(function (form) {
      var box = form.querySelector("textarea[name=document]");
      var file = form.querySelector("[data-import-file]");
      var fileLabel = form.querySelector("[data-import-file-label]");
      if (file && fileLabel && box && window.FileReader) {
        fileLabel.hidden = false;
        file.addEventListener("change", function () {
          var f = file.files && file.files[0];
          if (!f) return;
          var reader = new FileReader();
          reader.onload = function () { box.value = String(reader.result || ""); };
          reader.readAsText(f);
        });
      }
      var button = form.querySelector("button[type=submit]");
      var status = form.querySelector("[data-import-status]");
      var timer = null;
      form.addEventListener("submit", function () {
        if (!button) return;
        var label = button.textContent;
        var started = Date.now();
        var show = function () {
          var secs = Math.floor((Date.now() - started) / 1000);
          button.textContent = "Importing… " + secs + " s";
          if (status) status.textContent = "Importing, " + secs + " s elapsed";
        };
        // Disable after the browser has collected the form (a disabled button is not sent).
        setTimeout(function () { button.disabled = true; }, 0);
        show();
        timer = setInterval(show, 1000);
        // Coming back through the history cache restores the button.
        window.addEventListener("pageshow", function () {
          if (timer) clearInterval(timer);
          button.disabled = false;
          button.textContent = label;
          if (status) status.textContent = "";
        }, { once: true });
      });
    });
  });
})();

// ---- provider tools (admin/provider_tools*.html): test model, fetch upstream models ----
// A `form[data-probe]` posts in the background; its sibling `[data-probe-out]` shows a
// spinner with the elapsed seconds, then the `[data-probe-result]` of the page the server
// answered with (or that page's error messages). Without JavaScript the form posts normally.
(function () {
  "use strict";
  function progress(out, label) {
    var line = document.createElement("p");
    line.className = "probe-progress";
    line.setAttribute("role", "status");
    var spin = document.createElement("span");
    spin.className = "spinner";
    spin.setAttribute("aria-hidden", "true");
    var text = document.createElement("span");
    line.appendChild(spin);
    line.appendChild(text);
    out.textContent = "";
    out.appendChild(line);
    var started = Date.now();
    var show = function () {
      text.textContent = label + " " + Math.floor((Date.now() - started) / 1000) + " s";
    };
    show();
    return setInterval(show, 1000);
  }
  function alertBox(message) {
    var p = document.createElement("p");
    p.className = "alert";
    p.setAttribute("role", "alert");
    p.textContent = message;
    return p;
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-probe]").forEach(function (form) {
      var out = form.parentNode && form.parentNode.querySelector("[data-probe-out]");
      if (!out || !window.fetch || !window.DOMParser || !window.URLSearchParams) return;
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var button = form.querySelector("button[type=submit]");
        var body = new URLSearchParams(new FormData(form));
        if (button) button.disabled = true;
        var timer = progress(out, form.getAttribute("data-probe") || "Working…");
        fetch(form.action, {
          method: "POST",
          body: body,
          credentials: "same-origin",
          headers: { "Content-Type": "application/x-www-form-urlencoded" }
        }).then(function (r) {
          return r.text().then(function (html) { return { status: r.status, html: html }; });
        }).then(function (res) {
          var doc = new DOMParser().parseFromString(res.html, "text/html");
          var result = doc.querySelector("[data-probe-result]");
          out.textContent = "";
          if (result) {
            out.appendChild(document.importNode(result, true));
            return;
          }
          var errors = Array.prototype.map.call(
            doc.querySelectorAll(".field-error, .alert"),
            function (e) { return e.textContent.trim(); }
          ).filter(Boolean);
          if (errors.length) {
            out.appendChild(alertBox(errors.join(" ")));
          } else {
            var text = doc.body ? doc.body.textContent.trim().slice(0, 300) : "";
            out.appendChild(alertBox("The console answered HTTP " + res.status + (text ? ": " + text : "") +
              ". Reload the page and try again."));
          }
        }).catch(function (e) {
          out.textContent = "";
          out.appendChild(alertBox("The request did not complete: " + e + ". Try again."));
        }).then(function () {
          clearInterval(timer);
          if (button) button.disabled = false;
        });
      });
    });
  });
})();

// ---- admin users (admin/user.html): allow-list checkboxes pick "only the checked ones";
// the delete button waits until the user's email is typed (the server checks it too) ----
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("fieldset.allow").forEach(function (set) {
      var only = set.querySelector("input[type=radio][value=only]");
      if (!only) return;
      set.querySelectorAll("input[type=checkbox]").forEach(function (box) {
        box.addEventListener("change", function () { if (box.checked) only.checked = true; });
      });
    });
    document.querySelectorAll("input[data-confirm-text]").forEach(function (input) {
      var button = input.form && input.form.querySelector("button[type=submit]");
      if (!button) return;
      var want = input.getAttribute("data-confirm-text").toLowerCase();
      var check = function () { button.disabled = input.value.trim().toLowerCase() !== want; };
      input.addEventListener("input", check);
      check();
    });
  });
})();
