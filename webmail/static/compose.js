// The compose page (/nouveau): directory suggestions as an ARIA 1.2 combobox on the
// À, Cc and Cci fields (list autocomplete, the listbox's options from
// /annuaire/suggestions), and each field's recipient status from /annuaire/statut.
// No inline script anywhere (strict CSP); without this file the page still works.
"use strict";
(function () {
  const DELAY = 200; // ms after the last key before asking the directory
  const MIN = 2;

  function lastToken(value) {
    const cut = Math.max(value.lastIndexOf(","), value.lastIndexOf(";"));
    return { head: value.slice(0, cut + 1), token: value.slice(cut + 1).trim() };
  }

  function setUp(input) {
    const key = input.dataset.annuaire;
    const list = document.getElementById("suggestions-" + key);
    const status = document.getElementById("statut-" + key);
    let timer = null;
    let asked = 0;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", list.id);

    function options() {
      return Array.from(list.querySelectorAll('[role="option"]:not([aria-disabled="true"])'));
    }
    function close() {
      list.hidden = true;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }
    function activate(option) {
      for (const o of options()) o.setAttribute("aria-selected", o === option ? "true" : "false");
      if (option) {
        input.setAttribute("aria-activedescendant", option.id);
        option.scrollIntoView({ block: "nearest" });
      }
    }
    function active() {
      return list.querySelector('[role="option"][aria-selected="true"]');
    }
    function choose(option) {
      const name = option.dataset.nom;
      // A display name is quoted only when it holds a character that ends a name (RFC 5322 3.4).
      const plain = /^[^,;<>"@()\[\]:\\]*$/.test(name || "");
      const shown = plain ? name : '"' + (name || "").replace(/["\\]/g, "") + '"';
      const mailbox = name ? shown + " <" + option.dataset.adresse + ">" : option.dataset.adresse;
      const head = lastToken(input.value).head;
      input.value = (head ? head.replace(/\s*$/, " ") : "") + mailbox + ", ";
      close();
      input.focus();
      check();
    }
    async function suggest() {
      const token = lastToken(input.value).token;
      if (token.length < MIN) { close(); return; }
      const mine = ++asked;
      const response = await fetch("/annuaire/suggestions?champ=" + key + "&q=" + encodeURIComponent(token.slice(0, 64)),
                                   { credentials: "same-origin" });
      if (mine !== asked || !response.ok) return;
      list.innerHTML = await response.text(); // the server's escaped fragment
      list.hidden = false;
      input.setAttribute("aria-expanded", "true");
      input.removeAttribute("aria-activedescendant");
    }
    async function check() {
      const response = await fetch("/annuaire/statut?adresses=" + encodeURIComponent(input.value),
                                   { credentials: "same-origin" });
      if (response.ok) status.innerHTML = await response.text();
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(suggest, DELAY);
    });
    input.addEventListener("keydown", function (event) {
      const all = options();
      const current = active();
      const index = all.indexOf(current);
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        if (list.hidden) { if (event.key === "ArrowDown") suggest(); return; }
        event.preventDefault();
        if (!all.length) return;
        const next = event.key === "ArrowDown" ? (index + 1) % all.length : (index <= 0 ? all.length - 1 : index - 1);
        activate(all[next]);
      } else if (event.key === "Enter" && !list.hidden && current) {
        event.preventDefault(); // choose the entry; never send the form from here
        choose(current);
      } else if (event.key === "Escape" && !list.hidden) {
        event.preventDefault();
        close();
      } else if (event.key === "Tab" && !list.hidden) {
        if (current) choose(current); else close();
      }
    });
    input.addEventListener("change", check);
    input.addEventListener("blur", function () { setTimeout(close, 150); });
    list.addEventListener("mousedown", function (event) {
      const option = event.target.closest('[role="option"]:not([aria-disabled="true"])');
      if (option) { event.preventDefault(); choose(option); }
    });
  }

  for (const input of document.querySelectorAll("input[data-annuaire]")) setUp(input);
})();
