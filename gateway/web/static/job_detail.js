// A job's page, live: keeps the state, reason and exit code current (polls the job's JSON every 3 s
// until it has finished) and, on "Follow", streams the log from the server-sent-event endpoint
// (same origin; the session cookie authenticates). Lines go in as text, never as HTML.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-url");
  var logsUrl = box.getAttribute("data-logs");
  var finished = box.getAttribute("data-finished") === "true";
  var log = document.getElementById("log");
  var status = document.querySelector("[data-log-status]");
  var follow = document.querySelector("[data-follow]");
  var source = null;

  function set(name, text) {
    var node = document.querySelector('[data-job="' + name + '"]');
    if (node) { node.textContent = text; }
  }
  function showState(job) {
    var slot = document.querySelector('[data-job="state"]');
    if (slot) {
      var badge = document.createElement("span");
      badge.className = "state state-" + job.state;
      badge.textContent = job.state.replace("_", " ");
      slot.replaceChildren(badge);
    }
    set("reason", job.reason || "");
    set("exit_code", job.exit_code === null || job.exit_code === undefined ? "—" : String(job.exit_code));
    if (job.cluster && job.cluster.name) {
      var c = document.querySelector('[data-job="cluster"]');
      if (c && !c.querySelector("a")) { c.textContent = job.cluster.name; }
    }
  }
  function done() {
    finished = true;
    var forms = document.querySelectorAll("[data-hide-when-finished]");
    for (var i = 0; i < forms.length; i++) { forms[i].hidden = true; }
    if (follow) { follow.hidden = true; }
  }
  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (job) {
        showState(job);
        if (job.finished_at) { done(); } else { window.setTimeout(poll, 3000); }
      })
      .catch(function () { window.setTimeout(poll, 6000); });
  }

  function startFollow() {
    if (source || !window.EventSource) { return; }
    source = new EventSource(logsUrl, { withCredentials: true });
    var first = true;
    follow.hidden = true;
    if (status) { status.textContent = "Following the log…"; }
    source.onmessage = function (ev) {
      if (first) { log.textContent = ""; first = false; }  // the stream starts with the tail again
      log.appendChild(document.createTextNode(ev.data + "\n"));
      log.scrollTop = log.scrollHeight;
    };
    function ended() {
      if (status) { status.textContent = "The job has finished; this is its whole log tail."; }
      done();
    }
    source.addEventListener("end", function () {
      source.close(); source = null;
      ended(); poll();
    });
    // The stream also closes when the job ends (a browser drops an "end" event without data), or when
    // the connection breaks: ask the job which it was.
    source.onerror = function () {
      if (source) { source.close(); source = null; }
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (job) {
          showState(job);
          if (job.finished_at) { ended(); return; }
          throw new Error("still running");
        })
        .catch(function () {
          if (status) { status.textContent = "Lost the log stream."; }
          if (follow && !finished) { follow.hidden = false; follow.textContent = "Follow again"; }
        });
    };
  }

  if (!finished) {
    if (follow && window.EventSource) { follow.hidden = false; follow.addEventListener("click", startFollow); }
    window.setTimeout(poll, 3000);
  }
}());
