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
