// The chat view of an incident's conversation (web/templates/incidents/_conversation.html).
//
// - Each group (a step's attempt) and each tool message is a <details>: it works without JavaScript. Here the
//   reader's open/closed choices are remembered in localStorage, per user and incident
//   ("agent-monitor:chat:<username>:<incident>"), and restored on every render.
// - New messages are appended, never re-rendered: on live-message / live-step (live.js) we fetch only the
//   messages after the last one shown (…/conversation/after?after_id=N) and move them into their group (a step's
//   attempt anywhere, other messages only into the last group) or add a new group at the end. The log's own
//   scroll position is kept unless the reader was at its bottom (then it follows), and the window never moves.
// - While a filter is on nothing is appended: "N new messages" says what arrived.
// - #message-<id> (a search result's link) opens the groups around that message and highlights it; a message
//   older than the page shows is loaded with the messages around it (…/conversation?around=<id>).
(function () {
  "use strict";
  var PREFIX = "agent-monitor:chat:";

  function storeKey(chat) {
    return PREFIX + (chat.getAttribute("data-user") || "") + ":" + chat.getAttribute("data-incident");
  }

  function loadState(chat) {
    try {
      var value = JSON.parse(window.localStorage.getItem(storeKey(chat)) || "{}");
      return value && typeof value === "object" ? value : {};
    } catch (err) {
      return {};
    }
  }

  function saveState(chat, state) {
    try {
      window.localStorage.setItem(storeKey(chat), JSON.stringify(state));
    } catch (err) { /* storage full or off: the choice lasts until the page is left */ }
  }

  function restore(chat, root) {
    var state = loadState(chat);
    root.querySelectorAll("details[data-key]").forEach(function (details) {
      var key = details.getAttribute("data-key");
      if (Object.prototype.hasOwnProperty.call(state, key)) details.open = !!state[key];
    });
  }

  // toggle does not bubble: listen in the capture phase. It also fires for changes made here (restore, opening
  // a linked message's group); saving the state as it then is keeps the store and the page in step.
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.hasAttribute("data-key")) return;
    var chat = details.closest(".chat");
    if (!chat) return;
    var state = loadState(chat);
    state[details.getAttribute("data-key")] = details.open;
    saveState(chat, state);
  }, true);

  function currentChat() {
    return document.getElementById("chat");
  }

  // --- a linked message -------------------------------------------------------------------------------
  function showTarget() {
    var match = /^#message-(\d+)$/.exec(window.location.hash);
    if (!match) return;
    var chat = currentChat();
    var target = document.getElementById("message-" + match[1]);
    if (!target) {
      // Older than the messages shown: the page around it (once only: that page is "filtered").
      if (chat && chat.getAttribute("data-filtered") === "0") {
        window.location.replace(chat.getAttribute("data-around-url") + "?around=" + match[1] + "#message-" + match[1]);
      }
      return;
    }
    for (var node = target; node; node = node.parentElement) {
      if (node instanceof HTMLDetailsElement) node.open = true;
    }
    target.querySelectorAll("details").forEach(function (d) { d.open = true; });
    document.querySelectorAll(".message.is-target").forEach(function (el) { el.classList.remove("is-target"); });
    target.classList.add("is-target");
    target.scrollIntoView({ block: "center" });
  }

  // --- live append --------------------------------------------------------------------------------------
  var timer = null;
  var busy = false;
  var again = false;
  var unseen = 0; // messages that arrived while a filter was on

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(fetchNew, 150);
  }

  function fetchNew() {
    var chat = currentChat();
    if (!chat) return;
    if (busy) { again = true; return; }
    busy = true;
    var url = chat.getAttribute("data-after-url") + "?after_id=" + encodeURIComponent(chat.getAttribute("data-last-id") || "0");
    window.fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) { if (apply(chat, html)) again = true; })
      .catch(function () { /* the next live event (or the reconnect's resync) tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; fetchNew(); }
      });
  }

  function updateHead(group) {
    var items = group.querySelectorAll(":scope > .chat-messages > .message");
    var count = group.querySelector("[data-count]");
    if (count) count.textContent = items.length + " message" + (items.length === 1 ? "" : "s");
    var last = items[items.length - 1];
    var end = group.querySelector("time[data-end]");
    var wrap = group.querySelector("[data-end-wrap]");
    if (last && end && wrap) {
      var time = last.querySelector("time");
      if (time) {
        end.setAttribute("datetime", time.getAttribute("datetime"));
        end.textContent = time.textContent;
        wrap.hidden = items.length < 2;
      }
    }
  }

  // Returns true when more messages wait (the server sends a bounded batch).
  function apply(chat, html) {
    if (currentChat() !== chat) return false; // swapped by a filter meanwhile: its own last id applies
    var template = document.createElement("template");
    template.innerHTML = html;
    var batch = template.content.querySelector(".chat-append");
    if (!batch) return false;
    var lastId = Number(batch.getAttribute("data-last-id") || "0");
    if (lastId <= Number(chat.getAttribute("data-last-id") || "0")) return false;
    chat.setAttribute("data-last-id", String(lastId));
    var groups = Array.prototype.slice.call(batch.querySelectorAll(":scope > .chat-group"));

    if (chat.getAttribute("data-filtered") === "1") {
      groups.forEach(function (g) { unseen += g.querySelectorAll(".message").length; });
      var notice = chat.querySelector(".chat-new");
      if (notice && unseen > 0) {
        notice.querySelector("[data-new-count]").textContent = String(unseen);
        notice.hidden = false;
      }
      return batch.getAttribute("data-more") === "1";
    }

    var log = chat.querySelector(".chat-log");
    var windowY = window.scrollY;
    var top = log.scrollTop;
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 4 && log.scrollHeight > log.clientHeight;
    var empty = log.querySelector(":scope > .empty");
    if (empty) empty.remove();

    groups.forEach(function (group) {
      var mergeKey = group.getAttribute("data-merge-key");
      var existing = null;
      var shown = log.querySelectorAll(":scope > .chat-group");
      if (group.getAttribute("data-merge") === "any") {
        shown.forEach(function (g) { if (g.getAttribute("data-merge-key") === mergeKey) existing = g; });
      } else if (shown.length && shown[shown.length - 1].getAttribute("data-merge-key") === mergeKey) {
        existing = shown[shown.length - 1];
      }
      if (existing) {
        var list = existing.querySelector(":scope > .chat-messages");
        group.querySelectorAll(":scope > .chat-messages > .message").forEach(function (item) {
          if (!document.getElementById(item.id)) {
            list.appendChild(item);
            restore(chat, item);
          }
        });
        updateHead(existing);
      } else {
        log.appendChild(group);
        restore(chat, group);
      }
    });

    log.scrollTop = atBottom ? log.scrollHeight : top;
    if (window.scrollY !== windowY) window.scrollTo(window.scrollX, windowY);
    return batch.getAttribute("data-more") === "1";
  }

  function init(chat) {
    unseen = 0;
    restore(chat, chat);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var chat = currentChat();
    if (!chat) return;
    init(chat);
    showTarget();
    document.body.addEventListener("live-message", schedule);
    document.body.addEventListener("live-step", schedule);
    // A filter applied or cleared (htmx swapped #chat): the new content gets the reader's choices too.
    document.body.addEventListener("htmx:load", function (event) {
      if (event.target && event.target.id === "chat") init(event.target);
    });
  });
  window.addEventListener("hashchange", showTarget);
})();
