// sagaflow console: live refresh through server-sent events (no library, no CDN).
// The server sends one "change" frame per batch of new events; a page whose topic
// matches re-renders its live region from the server (the read models), at most
// once per REFRESH_MS. Nothing here polls.
(function () {
  "use strict";
  var REFRESH_MS = 150;
  var topic = document.body.getAttribute("data-live");
  var indicator = document.getElementById("live-state");
  if (!topic || !window.EventSource) return;
  var pending = false, running = false, timer = null;
  window.sagaflowConsole = { refreshes: 0, lastRefreshAt: 0, lastEvents: [] };

  function matches(events) {
    if (topic === "*") return true;
    for (var i = 0; i < events.length; i++) {
      if (events[i].stream_id.indexOf(topic) !== -1) return true;
    }
    return false;
  }

  function refresh() {
    if (running) { pending = true; return; }
    running = true;
    fetch(window.location.href, {
      headers: { "X-Console-Fragment": "1" }, credentials: "same-origin", cache: "no-store"
    }).then(function (resp) {
      if (resp.status === 401 || resp.redirected) { window.location.reload(); return null; }
      return resp.ok ? resp.text() : null;
    }).then(function (html) {
      if (html === null) return;
      var live = document.getElementById("live");
      // Keep what the person is typing: skip the refresh while a field in the
      // live region has focus.
      if (live.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
        pending = true; return;
      }
      live.innerHTML = html;
      window.sagaflowConsole.refreshes += 1;
      window.sagaflowConsole.lastRefreshAt = Date.now();
    }).catch(function () {}).then(function () {
      running = false;
      if (pending) { pending = false; schedule(); }
    });
  }

  function schedule() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, REFRESH_MS);
  }

  var source = new EventSource("/console/live");
  // Why a refresh on (re)connect: events that landed between the page's render and
  // the subscription (or while disconnected) sent no frame to this page.
  source.addEventListener("open", function () {
    if (indicator) indicator.className = "on";
    schedule();
  });
  source.addEventListener("error", function () { if (indicator) indicator.className = "off"; });
  source.addEventListener("change", function (msg) {
    var body = JSON.parse(msg.data);
    window.sagaflowConsole.lastEvents = body.events;
    if (matches(body.events)) schedule();
  });
})();
