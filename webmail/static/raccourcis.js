// Keyboard shortcuts of the webmail (listed on /aide). A static file: the CSP allows
// no inline script. Every shortcut only moves focus or follows a link the page already
// has, so the pages work the same without JavaScript.
//   /      the search field (on /recherche), else go to /recherche
//   n      new message (/nouveau)
//   j, k   next / previous message of the list (focus moves to its link)
//   r      reply to the message shown ("Répondre")
// Keys typed in a field, or with Ctrl/Alt/Meta, are left alone.
(function () {
  "use strict";

  function typing(target) {
    if (!target || !target.tagName) {
      return false;
    }
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function follow(selector) {
    var link = document.querySelector(selector);
    if (link) {
      link.click();
      return true;
    }
    return false;
  }

  function step(delta) {
    var links = Array.prototype.slice.call(document.querySelectorAll("a.lien-message"));
    if (links.length === 0) {
      return false;
    }
    var index = links.indexOf(document.activeElement);
    var next = index < 0 ? (delta > 0 ? 0 : links.length - 1)
                         : Math.min(links.length - 1, Math.max(0, index + delta));
    links[next].focus();
    var row = links[next].closest("tr");
    var rows = document.querySelectorAll("tr.courant-clavier");
    for (var i = 0; i < rows.length; i++) {
      rows[i].classList.remove("courant-clavier");
    }
    if (row) {
      row.classList.add("courant-clavier");
    }
    return true;
  }

  var actions = {
    "/": function () {
      var field = document.querySelector("[data-raccourci-recherche]");
      if (field) {
        field.focus();
        return true;
      }
      window.location.assign("/recherche");
      return true;
    },
    "n": function () {
      window.location.assign("/nouveau");
      return true;
    },
    "j": function () { return step(1); },
    "k": function () { return step(-1); },
    "r": function () {
      return follow("a[data-raccourci='r']") || follow("a[href^='/nouveau?repondre=']");
    }
  };

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.altKey || event.metaKey || event.defaultPrevented || typing(event.target)) {
      return;
    }
    var action = actions[event.key];
    if (action && action()) {
      event.preventDefault();
    }
  });
}());
