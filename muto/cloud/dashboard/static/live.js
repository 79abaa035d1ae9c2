// Live pages: every few seconds, fetch this page again and swap its <main> in place.
// No framework, no build step; stops while the tab is hidden and says when it last ran.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!main || !main.hasAttribute("data-live")) return;
  var PERIOD_MS = 2000;
  function say(text) { if (status) status.textContent = text; }
  function refresh() {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Muto-Live": "1" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          say("signed out: reload to sign in");
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) main.innerHTML = fresh.innerHTML;
        say("live · updated " + new Date().toLocaleTimeString());
      })
      .catch(function () { say("live · server unreachable, retrying"); });
  }
  say("live");
  window.setInterval(refresh, PERIOD_MS);
})();
