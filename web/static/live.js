// Live updates for the server-rendered pages, without polling.
//
// <body data-live-src="/api/events/stream?incident_id=7"> opens one EventSource per page. Each event is
// re-dispatched on <body> as "live-<group>" (incident, workflow, step, comment, attachment, link, …) and
// "live-any"; page elements refresh themselves with htmx, e.g.
//   <section hx-get="/incidents/7/partials/workflow" hx-trigger="live-step from:body delay:300ms">
// htmx restarts the delay on every event, so a burst of updates becomes one request per element.
// The first connection replays events from data-live-since (a little before the page was rendered), so a
// change committed while the page loaded is not missed.
// The browser resumes a dropped stream itself (sending Last-Event-ID); if it gives up (the web process
// answered 502/503 while restarting), we open a new one after a back-off, resuming from the last id.
(function () {
  "use strict";
  var body = document.body;
  var src = body.getAttribute("data-live-src");
  if (!src || !window.EventSource) return;
  var indicator = document.querySelector("[data-live-state]");
  var seen = [];
  window.agentMonitorLive = { seen: seen }; // event ids received, in order (diagnostics)
  var lastId = null;
  var delay = 1000;
  var dropped = false;

  function show(state, text) {
    if (!indicator) return;
    indicator.setAttribute("data-live-state", state);
    indicator.textContent = text;
  }

  function dispatch(name, detail) {
    body.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  function resync() {
    // After a gap, refresh every live element once; the replayed events refresh them too, but a gap
    // longer than the server's catch-up window would otherwise leave them stale.
    ["incident", "workflow", "step", "message", "comment", "attachment", "link", "approval", "process", "service", "any"].forEach(function (g) {
      dispatch("live-" + g, null);
    });
  }

  function connect() {
    var url = src;
    var since = body.getAttribute("data-live-since");
    if (lastId !== null) url += (url.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + encodeURIComponent(lastId);
    else if (since) url += (url.indexOf("?") < 0 ? "?" : "&") + "since=" + encodeURIComponent(since);
    var source = new EventSource(url);
    source.onopen = function () {
      delay = 1000;
      show("live", "Live");
      if (dropped) resync();
      dropped = false;
    };
    source.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      if (message.lastEventId) lastId = message.lastEventId;
      seen.push(event.id);
      var group = String(event.kind || "").split(".")[0];
      if (group) dispatch("live-" + group, event);
      dispatch("live-any", event);
    };
    source.onerror = function () {
      dropped = true;
      show("offline", "Reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        window.setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      }
    };
  }

  connect();
})();
