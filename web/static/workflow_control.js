// Workflow control on the incident page (web/pages/workflow_control.py), on top of htmx:
// - a refused change answers 409 or 422 with the form and its reason: swap it in like a success (htmx leaves
//   error answers out by default);
// - while a control form is open, the section's live refresh waits (it would wipe what is being typed) and
//   runs once the form is closed;
// - Cancel closes the form in place (without JavaScript it is a link back to the incident);
// - what the last change said ("Step spare removed.", or why it was refused) stays when a live refresh redraws the
//   section a moment later, until the next change from the page.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var body = document.body;

  function section() { return document.getElementById("workflow"); }
  function formOpen(where) { return !!(where && where.querySelector("[data-wf-form]")); }
  function refresh(where) {
    if (!window.htmx || !where.getAttribute("hx-get")) return;
    window.htmx.ajax("GET", where.getAttribute("hx-get"), { target: where, swap: "innerHTML" });
  }

  body.addEventListener("htmx:beforeRequest", function (evt) {
    var where = section();
    if (!where || evt.detail.elt !== where || !formOpen(where)) return;
    evt.preventDefault();
    where.setAttribute("data-stale", "true");
  });

  body.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr.status;
    var elt = evt.detail.elt;
    if ([404, 409, 422, 503].indexOf(status) < 0 || !elt.closest || !elt.closest("#workflow")) return;
    evt.detail.shouldSwap = true;
    evt.detail.isError = false;
  });

  // A live refresh is a request of the section itself; a change is a form or button inside it (whose own events
  // may not reach <body>: it is gone once its answer is swapped in).
  var said = null;
  body.addEventListener("htmx:beforeSwap", function (evt) {
    var where = section();
    if (where && evt.detail.elt === where) said = where.querySelector("[data-wf-said]");
  });
  function putBackSaid(where) {
    if (!said || where.querySelector("[data-wf-said]")) return;
    var links = document.getElementById("workflow-title");
    links = links && links.nextElementSibling;  // under the Temporal UI and run graph links, where the answer had it
    if (links) links.insertAdjacentElement("afterend", said);
    said = null;
  }

  body.addEventListener("htmx:afterSwap", function (evt) {
    var where = section();
    if (where && evt.detail.target === where) {
      where.removeAttribute("data-stale");
      if (evt.detail.elt === where) putBackSaid(where);
    }
    var panel = evt.detail.target && evt.detail.target.querySelector && evt.detail.target.querySelector("[data-wf-form]");
    var first = panel && (panel.querySelector("[aria-invalid=true]") || panel.querySelector("input:not([type=hidden]), select, textarea"));
    if (first && evt.detail.elt && evt.detail.elt.matches && evt.detail.elt.matches("a, form")) first.focus();
  });

  body.addEventListener("click", function (evt) {
    var cancel = evt.target.closest && evt.target.closest("[data-wf-cancel]");
    if (!cancel) return;
    var where = section();
    var panel = cancel.closest("[data-wf-form]");
    if (!where || !panel) return;
    evt.preventDefault();
    panel.remove();
    if (where.getAttribute("data-stale") && !formOpen(where)) {
      where.removeAttribute("data-stale");
      refresh(where);
    }
  });
})();
