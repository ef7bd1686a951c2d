// The console's one script: follows a provisioning run live (server-sent events), and copies a
// shown secret to the clipboard. Pages work without it.
"use strict";

(function () {
  var progress = document.getElementById("progress");
  var url = progress && progress.getAttribute("data-events");
  if (url && window.EventSource) {
    var source = new EventSource(url);
    source.addEventListener("progress", function (e) {
      var p = JSON.parse(e.data);
      document.getElementById("headline").textContent = p.headline;
      p.core.concat(p.tracking).forEach(function (s) {
        var li = document.getElementById("step-" + s.id);
        if (li) {
          li.className = s.state;
          li.querySelector(".state").textContent = s.state;
        }
      });
      if (p.finished) {
        source.close();
        // The result (and a secret meant for this user only) is rendered by the server.
        window.location.reload();
      }
    });
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.getAttribute("data-copy"));
      field.select();
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard) {
        navigator.clipboard.writeText(field.value).then(done, function () {
          document.execCommand("copy");
          done();
        });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  });
})();
