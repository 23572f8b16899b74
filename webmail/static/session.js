// The session warning (webmail/timeout.py): <body data-session-fin="SECONDS"
// data-session-limite="inactivite|max" data-session-alerte="120">. Two minutes before
// the end, the role="alert" box shows; "Rester connecté" asks /session (that request
// is the activity that keeps the session) and starts counting again. At the end the
// page is loaded again: the server answers with the login page if the session is over.
"use strict";
(function () {
  var body = document.body;
  var box = document.getElementById("session-alerte");
  if (!body || !box || !body.dataset.sessionFin) { return; }
  var text = box.querySelector("[data-session-texte]");
  var stay = box.querySelector("[data-session-rester]");
  var warnBefore = parseInt(body.dataset.sessionAlerte || "120", 10);
  var timers = [];

  // A GET of the page without its #fragment: assigning the same URL with a fragment
  // would only scroll, and reload() would post a form again.
  function reload() { window.location.assign(window.location.pathname + window.location.search); }

  function clear() { timers.forEach(clearTimeout); timers = []; }

  function schedule(left, limit) {
    clear();
    box.hidden = true;
    var warnIn = Math.max(0, left - warnBefore);
    timers.push(setTimeout(function () { warn(Math.min(left, warnBefore), limit); }, warnIn * 1000));
    timers.push(setTimeout(reload, left * 1000 + 1000));
  }

  function warn(seconds, limit) {
    var minutes = Math.max(1, Math.round(seconds / 60));
    var when = minutes > 1 ? "dans " + minutes + " minutes" : "dans une minute";
    if (limit === "max") {
      text.textContent = "Votre session se termine " + when + " (durée maximale de connexion atteinte). " +
        "Enregistrez votre travail : il faudra vous reconnecter.";
      stay.hidden = true;
    } else {
      text.textContent = "Votre session va expirer " + when + " faute d'activité.";
      stay.hidden = false;
    }
    box.hidden = false;
  }

  stay.addEventListener("click", function () {
    fetch("/session", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { reload(); return null; }
        return response.json();
      })
      .then(function (data) { if (data) { schedule(data.fin, data.limite); } })
      .catch(function () { /* network down: the page reloads at the end anyway */ });
  });

  schedule(parseInt(body.dataset.sessionFin, 10), body.dataset.sessionLimite);
})();
