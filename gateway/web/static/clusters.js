// Keeps a cluster's connect or detail page current without a reload: polls the cluster's API
// every 2 s (same origin, the session cookie authenticates) and fills the [data-field] slots.
// Text only (textContent), never HTML from the server.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) { return; }
  var url = live.getAttribute("data-url");
  var connectPage = !!document.getElementById("done");
  var GiB = 1024 * 1024 * 1024;

  function set(field, text) {
    var nodes = document.querySelectorAll('[data-field="' + field + '"]');
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = text; }
  }
  function num(x) { return String(Math.round(x * 10) / 10); }
  function hhmmss(iso) { return iso ? iso.substring(11, 19) + " UTC" : "none yet"; }

  function showCapacity(cap) {
    var box = document.getElementById("capacity");
    var none = document.getElementById("no-capacity");
    if (!cap || !box) { return; }
    box.hidden = false;
    if (none) { none.hidden = true; }
    set("nodes", String(cap.node_count));
    set("cpus", num(cap.cpu_total_millis / 1000));
    set("memory_gib", num(cap.memory_total_bytes / GiB));
    set("gpus", String(cap.gpu_total));
    var body = document.getElementById("gpu-types");
    if (!body) { return; }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var types = Object.keys(cap.gpus_by_type || {}).sort();
    if (types.length === 0) {
      var empty = body.insertRow(); var cell = empty.insertCell();
      cell.colSpan = 3; cell.className = "muted"; cell.textContent = "No GPUs detected.";
    }
    types.forEach(function (key) {
      var row = body.insertRow(); var g = cap.gpus_by_type[key];
      row.insertCell().textContent = key.replace("|", " ");
      row.insertCell().textContent = String(g.total);
      row.insertCell().textContent = String(g.allocated);
    });
  }

  function show(c) {
    set("state", c.state);
    var badges = document.querySelectorAll('[data-field="state"]');
    for (var i = 0; i < badges.length; i++) { badges[i].className = "state state-" + c.state; }
    set("reason", c.state_reason);
    set("last_heartbeat", hhmmss(c.last_heartbeat_at));
    showCapacity(c.capacity);
    var done = document.getElementById("done");
    if (done) { done.hidden = c.state !== "attached"; }
  }

  function finished(state) {
    return state === "detached" || (connectPage && (state === "attached" || state === "failed"));
  }

  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (c) {
        show(c);
        set("updates", "updated " + new Date().toLocaleTimeString());
        if (!finished(c.state)) { window.setTimeout(poll, 2000); }
      })
      .catch(function () {
        set("updates", "cannot reach the server; retrying");
        window.setTimeout(poll, 5000);
      });
  }
  window.setTimeout(poll, 2000);
}());
