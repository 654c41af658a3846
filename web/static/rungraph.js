// The run graph page: a click on a step (an <a> inside the server-rendered SVG) loads its detail into the side
// panel with htmx instead of leaving the page; without JavaScript the link opens the step's own page. The open
// step's panel refreshes when a live event names that step, and the graph (refreshed by htmx on live events)
// keeps the selection.
(function () {
  "use strict";
  var current = null; // { step: id, href: url } of the step shown in the panel

  function panel() { return document.getElementById("step-panel"); }

  function mark() {
    document.querySelectorAll("#run-graph .dag-node").forEach(function (node) {
      node.classList.toggle("rg-selected", current !== null && node.getAttribute("data-node") === current.step);
    });
  }

  function load(href) {
    if (!window.htmx || !panel()) return false;
    window.htmx.ajax("GET", href, { target: "#step-panel", swap: "innerHTML" });
    return true;
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("#run-graph a[data-node-link]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    var href = link.getAttribute("href");
    if (!load(href)) return;
    event.preventDefault();
    current = { step: link.getAttribute("data-node-link"), href: href };
    mark();
    if (window.matchMedia && window.matchMedia("(max-width: 900px)").matches) {
      panel().scrollIntoView({ block: "start" });
    }
  });

  document.body.addEventListener("htmx:afterSwap", function (event) {
    if (event.target && event.target.id === "run-graph") mark();
  });

  var timer = null;
  function refresh(event) {
    if (current === null) return;
    var detail = event.detail || {};
    if (detail.step_id && detail.step_id !== current.step) return;
    window.clearTimeout(timer);
    timer = window.setTimeout(function () { load(current.href); }, 400);
  }
  ["live-step", "live-message", "live-approval"].forEach(function (name) {
    document.body.addEventListener(name, refresh);
  });
})();
