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
