// Keeps a dashboard page current without a reload (progressive enhancement: the page is complete
// without it). Every 4 s it reads the dashboard JSON (same origin, the session cookie authenticates)
// and updates the slots the server rendered: [data-num], [data-meter] bars, [data-state] badges and
// [data-age] heartbeat ages, each addressed by a JSON list of keys into the answer. When jobs or
// clusters came or went (and on the first and every 5th poll, for new reasons) it re-reads the page and swaps
// the [data-swap] sections. Text goes in with textContent; swapped sections are our own page's
// markup, parsed inertly by DOMParser (scripts in it never run).
(function () {
  "use strict";
  var root = document.getElementById("dash");
  if (!root || !window.fetch || !window.DOMParser) { return; }
  var url = root.getAttribute("data-url");
  var GiB = 1024 * 1024 * 1024, TiB = GiB * 1024;
  var EVERY = 4000, SWAP_EVERY = 5;
  var lastSig = null, polls = 0;

  function trim1(x) { var s = (Math.round(x * 10) / 10).toFixed(1); return s.slice(-2) === ".0" ? s.slice(0, -2) : s; }
  function unitText(unit, v) {
    if (unit === "cpu") { return [trim1(v), "vCPU"]; }
    if (unit === "bytes") { return v >= TiB ? [trim1(v / TiB), "TiB"] : [trim1(v / GiB), "GiB"]; }
    return [String(Math.round(v)), unit === "gpus" ? "GPUs" : ""];
  }
  function meterText(unit, a, t) {
    var x = unitText(unit, a), y = unitText(unit, t);
    return (x[1] === y[1] ? x[0] + " of " + y[0] + " " + y[1] : x.join(" ") + " of " + y.join(" ")).trim();
  }
  function since(iso, now) {
    if (!iso) { return "never"; }
    var s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
    if (s < 120) { return s + " s ago"; }
    if (s < 7200) { return Math.floor(s / 60) + " min ago"; }
    if (s < 172800) { return Math.floor(s / 3600) + " h ago"; }
    return Math.floor(s / 86400) + " d ago";
  }
  function at(obj, path) {
    for (var i = 0; i < path.length && obj !== undefined && obj !== null; i++) {
      var key = path[i];
      if (Array.isArray(obj)) {
        obj = obj.filter(function (el) { return el && String(el.id) === key; })[0];
      } else {
        obj = obj[key];
      }
    }
    return obj;
  }
  function each(attr, fn) {
    var nodes = document.querySelectorAll("[" + attr + "]");
    for (var i = 0; i < nodes.length; i++) {
      var path;
      try { path = JSON.parse(nodes[i].getAttribute(attr)); } catch (e) { continue; }
      fn(nodes[i], at(window.__dashboard, path));
    }
  }

  // Figures the page shows that the JSON holds only in parts: plan bars and GPU totals by type.
  function augment(j) {
    if (j.plan) {
      j._plan = {
        cpu: { assigned: j.plan.in_use.cpu, total: j.plan.caps.cpu },
        memory_bytes: { assigned: j.plan.in_use.memory_bytes, total: j.plan.caps.memory_bytes },
        gpus: { assigned: j.plan.in_use.gpus, total: j.plan.caps.gpus }
      };
    }
    if (j.resources && j.resources.clusters) {
      var types = {};
      j.resources.clusters.forEach(function (c) {
        if (c.state !== "attached") { return; }
        Object.keys(c.gpus_by_type || {}).forEach(function (k) {
          var t = types[k] || (types[k] = { assigned: 0, total: 0 });
          t.assigned += c.gpus_by_type[k].assigned; t.total += c.gpus_by_type[k].total;
        });
      });
      j._total_gpu_types = types;
    }
    return j;
  }
  function signature(j) {
    var parts = [JSON.stringify(j.jobs || {}), JSON.stringify(j.clusters_by_state || {})];
    ((j.resources && j.resources.clusters) || []).forEach(function (c) {
      parts.push(c.id + ":" + c.state + ":" + Object.keys(c.gpus_by_type || {}).sort().join(","));
    });
    if (j.plan) { parts.push(JSON.stringify(j.plan.in_use)); }
    return parts.join("|");
  }

  function update(now) {
    each("data-num", function (node, v) { if (v !== undefined && v !== null) { node.textContent = String(v); } });
    each("data-state", function (node, v) {
      if (typeof v === "string") { node.textContent = v.replace("_", " "); node.className = "state state-" + v; }
    });
    each("data-age", function (node, v) { node.textContent = since(v, now); });
    each("data-meter", function (node, v) {
      if (!v || typeof v.total !== "number") { return; }
      var unit = node.getAttribute("data-unit");
      var pct = v.total > 0 ? Math.min(100, Math.round(100 * v.assigned / v.total)) : 0;
      var fill = node.querySelector(".bar-fill"), text = node.querySelector(".meter-text");
      if (fill) {
        fill.setAttribute("width", String(pct));
        fill.setAttribute("class", "bar-fill " + (pct >= 90 ? "full" : pct >= 70 ? "high" : "ok"));
      }
      if (text) { text.textContent = meterText(unit, v.assigned, v.total); }
    });
  }

  function swap() {
    return fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var olds = document.querySelectorAll("[data-swap][id]");
        for (var i = 0; i < olds.length; i++) {
          var repl = fresh.getElementById(olds[i].id);
          if (repl) { olds[i].parentNode.replaceChild(document.importNode(repl, true), olds[i]); }
        }
      });
  }

  function live(text) {
    var nodes = document.querySelectorAll("[data-live]");
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = text; }
  }

  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        var now = Date.parse(r.headers.get("Date") || "") || Date.now();
        return r.json().then(function (j) { return [augment(j), now]; });
      })
      .then(function (got) {
        window.__dashboard = got[0];
        var sig = signature(got[0]);
        polls += 1;
        // the first answer may already differ from what the page was rendered with
        var needSwap = lastSig === null || sig !== lastSig || polls % SWAP_EVERY === 0;
        lastSig = sig;
        return (needSwap ? swap() : Promise.resolve()).then(function () {
          update(got[1]);
          live("Updated " + new Date(got[1]).toISOString().substring(11, 19) + " UTC");
        });
      })
      .then(function () { window.setTimeout(poll, EVERY); })
      .catch(function () {
        live("Cannot reach the server; retrying");
        window.setTimeout(poll, EVERY * 2);
      });
  }
  window.setTimeout(poll, EVERY);
}());
