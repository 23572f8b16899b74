// "Imprimer" on the print view: the button shows only when JS runs (without JS the
// browser's own print menu does the same). No inline script: the CSP forbids it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-imprimer]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
});
