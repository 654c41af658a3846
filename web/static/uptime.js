// Uptime graphs of the services pages, drawn with the vendored uPlot from the uptime JSON API.
//
// <section data-uptime-src="/api/services/checkout/uptime"> holds a settings form (range, group, incident filters,
// "compare with the previous period"), a summary line, two chart boxes (availability; latency p50/p95), a tooltip
// and a list of the range's incidents. Each change of the form fetches the API again; so does a live service or
// incident event (live.js), at most every few seconds.
// Incidents are drawn as opened → resolved bands behind the lines, with a link per incident in a strip at the top
// of the availability chart: hover or focus shows its title, severity, duration and cause; a click opens it.
// No inline script or style attribute anywhere (the CSP forbids them): positions are set through element.style.
(function () {
  "use strict";
  if (!window.uPlot || !window.fetch) return;
  var STEP_SECONDS = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400 };
  var SEVERITY_FILL = {
    P1: "rgba(207, 34, 46, 0.16)", P2: "rgba(251, 143, 68, 0.18)",
    P3: "rgba(154, 103, 0, 0.14)", P4: "rgba(91, 101, 112, 0.12)"
  };
  var REFRESH_MS = 3000;

  function seconds(iso) { return Date.parse(iso) / 1000; }

  function pct(value) { return value === null || value === undefined ? "—" : (value * 100).toFixed(3) + "%"; }

  function ms(value) { return value === null || value === undefined ? "—" : Math.round(value) + " ms"; }

  function signed(value, digits, unit) {
    if (value === null || value === undefined) return "—";
    var text = Math.abs(value).toFixed(digits) + unit;
    return (value > 0 ? "+" : value < 0 ? "−" : "±") + text;
  }

  function span(totalSeconds) {
    var s = Math.max(0, Math.round(totalSeconds));
    if (s < 90) return s + " s";
    var m = Math.round(s / 60);
    if (m < 120) return m + " min";
    var h = Math.floor(s / 3600);
    if (h < 48) return h + " h " + (Math.round(s / 60) % 60) + " min";
    return Math.floor(s / 86400) + " d " + (h % 24) + " h";
  }

  function debounce(fn, wait) {
    var timer = null;
    return function () {
      if (timer) window.clearTimeout(timer);
      timer = window.setTimeout(function () { timer = null; fn(); }, wait);
    };
  }

  // Each series as a map time → value; a missing bucket longer than 1.5 steps is a gap (null), not a line across.
  function series(points, step, pick) {
    var out = new Map();
    var last = null;
    points.forEach(function (p) {
      var t = seconds(p.t);
      if (last !== null && t - last > step * 1.5) out.set(last + step, null);
      var v = pick(p);
      out.set(t, v === undefined ? null : v);
      last = t;
    });
    return out;
  }

  // One x array for all series (uPlot's shape); where a series has no value at a time it is undefined (spanned).
  function aligned(maps) {
    var xs = new Set();
    maps.forEach(function (m) { m.forEach(function (_, t) { xs.add(t); }); });
    var x = Array.from(xs).sort(function (a, b) { return a - b; });
    return [x].concat(maps.map(function (m) { return x.map(function (t) { return m.has(t) ? m.get(t) : undefined; }); }));
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setup(section) {
    var src = section.getAttribute("data-uptime-src");
    var form = section.querySelector(".uptime-controls");
    var summary = section.querySelector(".uptime-summary");
    var boxes = { availability: section.querySelector('[data-chart="availability"]'),
                  latency: section.querySelector('[data-chart="latency"]') };
    var tip = section.querySelector(".uptime-tip");
    var list = section.querySelector("[data-incident-list]");
    var charts = [];
    var seq = 0;
    var current = null;
    var syncKey = "uptime-" + Math.random().toString(36).slice(2);

    function query() {
      var params = new URLSearchParams();
      var data = new FormData(form);
      params.set("range", data.get("range") || "24h");
      ["group", "incident_type", "severity", "agent"].forEach(function (name) {
        var value = (data.get(name) || "").trim();
        if (value) params.set(name, value);
      });
      if (data.get("compare")) params.set("compare", "previous");
      // The all-services graph draws the summed points: it leaves out each service's own figures (10,000 of them).
      if (section.getAttribute("data-per-service") === "false") params.set("per_service", "false");
      return params.toString();
    }

    function load() {
      var mine = ++seq;
      section.setAttribute("data-loading", "true");
      fetch(src + "?" + query(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.json().then(function (body) {
            if (!response.ok) throw new Error(body.detail || "HTTP " + response.status);
            return body;
          }, function () { throw new Error("HTTP " + response.status); });
        })
        .then(function (data) { if (mine === seq) render(data); })
        .catch(function (err) {
          if (mine !== seq) return;
          summary.textContent = "The graph could not be loaded: " + err.message;
          section.setAttribute("data-loading", "error");
        });
    }

    function destroy() {
      charts.forEach(function (c) { c.destroy(); });
      charts = [];
    }

    function width() { return Math.max(240, Math.floor(section.clientWidth)); }

    function render(data) {
      current = data;
      destroy();
      hideTip();
      var step = STEP_SECONDS[data.step] || 60;
      var start = seconds(data.start), end = seconds(data.end);
      var previous = data.previous ? data.previous.points : null;
      var maps = [
        series(data.points, step, function (p) { return p.availability === null ? null : p.availability * 100; }),
        series(data.points, step, function (p) { return p.p50_ms; }),
        series(data.points, step, function (p) { return p.p95_ms; })
      ];
      if (previous) {
        maps.push(series(previous, step, function (p) { return p.availability === null ? null : p.availability * 100; }));
        maps.push(series(previous, step, function (p) { return p.p95_ms; }));
      }
      var all = aligned(maps);
      if (all[0].length === 0) all = [[start, end]].concat(maps.map(function () { return [null, null]; }));
      var x = all[0];
      var incidents = data.incidents || [];

      var xScale = { time: true, range: function () { return [start, end]; } };
      var bands = function (u) {
        var ctx = u.ctx, box = u.bbox;
        ctx.save();
        incidents.forEach(function (inc) {
          var from = Math.max(seconds(inc.opened_at), start);
          var to = Math.min(inc.resolved_at ? seconds(inc.resolved_at) : end, end);
          if (to < start || from > end) return;
          var left = u.valToPos(from, "x", true), right = u.valToPos(to, "x", true);
          ctx.fillStyle = SEVERITY_FILL[inc.severity] || SEVERITY_FILL.P4;
          ctx.fillRect(left, box.top, Math.max(right - left, 2), box.height);
        });
        ctx.restore();
      };
      var common = function (height) {
        return {
          width: width(), height: height,
          cursor: { sync: { key: syncKey }, drag: { x: false, y: false } },
          scales: { x: xScale },
          hooks: { drawAxes: [bands] },
          legend: { live: true }
        };
      };

      var avail = common(180);
      avail.series = [{}, { label: "availability", stroke: "#1a7f37", width: 2, value: function (u, v) { return v == null ? "—" : v.toFixed(3) + "%"; } }];
      avail.scales.y = { range: function (u, min) { var low = min === null || min === undefined ? 99 : Math.min(min, 99); return [Math.max(0, Math.floor(low)), 100]; } };
      avail.axes = [{}, { values: function (u, ticks) { return ticks.map(function (v) { return v + "%"; }); }, size: 56 }];
      var availData = [x, all[1]];
      if (previous) {
        avail.series.push({ label: "previous period", stroke: "#8c959f", dash: [6, 4], width: 1.5, value: function (u, v) { return v == null ? "—" : v.toFixed(3) + "%"; } });
        availData.push(all[4]);
      }
      avail.hooks.ready = [function (u) { markers(u, incidents, start, end); }];
      avail.hooks.setSize = [function (u) { markers(u, incidents, start, end); }];

      var lat = common(160);
      var msValue = function (u, v) { return v == null ? "—" : Math.round(v) + " ms"; };
      lat.series = [{}, { label: "p50", stroke: "#0969da", width: 1.5, value: msValue },
                        { label: "p95", stroke: "#8250df", width: 2, value: msValue }];
      lat.scales.y = { range: function (u, min, max) { return [0, Math.max(10, (max || 0) * 1.1)]; } };
      lat.axes = [{}, { values: function (u, ticks) { return ticks.map(function (v) { return v + " ms"; }); }, size: 64 }];
      var latData = [x, all[2], all[3]];
      if (previous) {
        lat.series.push({ label: "p95, previous period", stroke: "#8c959f", dash: [6, 4], width: 1.5, value: msValue });
        latData.push(all[5]);
      }

      boxes.availability.textContent = "";
      boxes.latency.textContent = "";
      charts.push(new window.uPlot(avail, availData, boxes.availability));
      charts.push(new window.uPlot(lat, latData, boxes.latency));
      describe(data);
      listIncidents(incidents);
      section.setAttribute("data-loading", "done");
      section.setAttribute("data-points", String(data.points.length));
    }

    function describe(data) {
      var s = data.summary || {};
      var text = "Availability " + pct(s.availability) + " · p50 " + ms(s.p50_ms) + " · p95 " + ms(s.p95_ms) +
        " · " + (s.checks || 0).toLocaleString("en") + " checks (" + (s.down || 0) + " down, " + (s.degraded || 0) +
        " degraded, " + (s.maintenance || 0) + " in maintenance) · " + data.step + " steps from " +
        (data.resolution || "") + " rollups, " + (data.timezone || "UTC");
      if (data.delta) {
        var d = data.delta;
        text += " · vs the previous period: availability " +
          (d.availability === null || d.availability === undefined ? "—" : signed(d.availability * 100, 3, " pp")) +
          ", p95 " + signed(d.p95_ms, 0, " ms");
      }
      summary.textContent = text;
    }

    function describeIncident(inc) {
      var duration = inc.duration_seconds !== null && inc.duration_seconds !== undefined
        ? span(inc.duration_seconds) + (inc.resolved_at ? "" : " so far") : "";
      return { title: "#" + inc.id + " " + inc.title, facts: inc.severity + " · " + (inc.incident_type || "") +
        (duration ? " · " + duration : "") + " · " + inc.status, cause: inc.cause || "" };
    }

    function listIncidents(incidents) {
      list.textContent = "";
      if (!incidents.length) { list.appendChild(el("li", "muted", "No incident in this range.")); return; }
      incidents.forEach(function (inc) {
        var about = describeIncident(inc);
        var li = el("li");
        var a = el("a", null, about.title);
        a.href = inc.url;
        li.appendChild(a);
        li.appendChild(el("span", "muted", " — " + about.facts + (about.cause ? " — " + about.cause : "")));
        list.appendChild(li);
      });
    }

    function markers(u, incidents, start, end) {
      var strip = u.over.querySelector(".incident-strip");
      if (!strip) {
        strip = el("div", "incident-strip");
        u.over.appendChild(strip);
      }
      strip.textContent = "";
      var full = u.over.clientWidth;
      incidents.forEach(function (inc) {
        var from = Math.max(seconds(inc.opened_at), start);
        var to = Math.min(inc.resolved_at ? seconds(inc.resolved_at) : end, end);
        if (to < start || from > end) return;
        var left = Math.max(0, u.valToPos(from, "x"));
        var right = Math.min(full, u.valToPos(to, "x"));
        var a = el("a", "incident-marker sev-" + inc.severity);
        var about = describeIncident(inc);
        a.href = inc.url;
        a.setAttribute("aria-label", about.title + ", " + about.facts + (about.cause ? ", " + about.cause : ""));
        a.setAttribute("data-incident", String(inc.id));
        a.setAttribute("aria-describedby", tip.id);
        a.style.left = Math.min(left, full - 8) + "px";
        a.style.width = Math.max(8, right - left) + "px";
        a.addEventListener("mouseenter", function () { showTip(a, about); });
        a.addEventListener("focus", function () { showTip(a, about); });
        a.addEventListener("mouseleave", hideTip);
        a.addEventListener("blur", hideTip);
        strip.appendChild(a);
      });
    }

    function showTip(anchor, about) {
      tip.textContent = "";
      tip.appendChild(el("strong", null, about.title));
      tip.appendChild(el("span", null, about.facts));
      if (about.cause) tip.appendChild(el("span", null, "Cause: " + about.cause));
      tip.appendChild(el("span", "muted", "Click to open the incident"));
      tip.hidden = false;
      var box = section.getBoundingClientRect(), at = anchor.getBoundingClientRect();
      var left = Math.min(Math.max(0, at.left - box.left), Math.max(0, box.width - tip.offsetWidth));
      tip.style.left = left + "px";
      tip.style.top = (at.bottom - box.top + 4) + "px";
    }

    function hideTip() { tip.hidden = true; }

    form.addEventListener("change", load);
    form.addEventListener("submit", function (event) { event.preventDefault(); load(); });
    var refresh = debounce(load, REFRESH_MS);
    document.body.addEventListener("live-service", refresh);
    document.body.addEventListener("live-incident", refresh);
    window.addEventListener("resize", debounce(function () {
      charts.forEach(function (c, i) { c.setSize({ width: width(), height: i === 0 ? 180 : 160 }); });
    }, 150));
    load();
  }

  function start() { document.querySelectorAll("[data-uptime-src]").forEach(setup); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
