// mailvet dashboard, list pages: drag and drop onto the upload form, and live progress.
// Everything here is an extra: without JavaScript the file input and a reload do the same.
"use strict";
(function () {
  function size(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MB";
    if (n >= 1024) return (n / 1024).toFixed(1) + " kB";
    return n + " bytes";
  }

  // --- upload: drop a file on the zone; refuse one over the limit before sending it ---
  var form = document.getElementById("upload-form");
  if (form) {
    var input = document.getElementById("file");
    var zone = document.getElementById("dropzone");
    var chosen = document.getElementById("chosen");
    var max = Number(form.getAttribute("data-max-bytes")) || 0;
    var tooBig = false;
    var show = function () {
      var file = input.files && input.files[0];
      tooBig = Boolean(file && max && file.size > max);
      chosen.textContent = file ? "Chosen: " + file.name + " (" + size(file.size) + ")" : "";
      chosen.className = tooBig ? "chosen error" : "chosen";
      if (tooBig) chosen.textContent += ". " + form.getAttribute("data-too-big");
      input.setAttribute("aria-invalid", tooBig ? "true" : "false");
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "dragend", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      var files = event.dataTransfer && event.dataTransfer.files;
      if (files && files.length) {
        input.files = files;
        show();
      }
    });
    form.addEventListener("submit", function (event) {
      if (tooBig) {
        event.preventDefault();
        input.focus();
      }
    });
  }

  // --- live progress: poll the page's JSON while a list runs ---
  var live = document.querySelector("[data-progress-url]");
  if (!live) return;
  var url = live.getAttribute("data-progress-url");
  var single = live.id === "progress";

  function update(scope, p) {
    var set = function (field, text) {
      var el = scope.querySelector('[data-field="' + field + '"]');
      if (el) el.textContent = text;
      return el;
    };
    var status = set("status", p.status);
    if (status) status.className = "badge status-" + p.status;
    var bar = scope.querySelector('[data-field="bar"]');
    if (bar) {
      bar.max = p.total;
      bar.value = p.done;
      bar.textContent = p.percent + "%";
    }
    set("done", p.done.toLocaleString("en"));
    set("rate", p.rate_text);
    set("eta", p.eta_text);
    set("retry_waiting", p.retry_waiting.toLocaleString("en"));
  }

  function running(p) { return p.status === "queued" || p.status === "running"; }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (data) {
        if (single) {
          update(live, data);
          if (!running(data)) { window.location.reload(); return; }
          window.setTimeout(poll, 2000);
          return;
        }
        var any = false;
        data.batches.forEach(function (p) {
          var row = live.querySelector('tr[data-batch="' + p.id + '"]');
          if (row) update(row, p);
          any = any || running(p);
        });
        if (any) window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }
  window.setTimeout(poll, 1000);
})();
