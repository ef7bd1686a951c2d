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

// Passkeys (WebAuthn): a form marked data-passkey="create" or "get" asks its data-options URL
// for the ceremony's options, lets the browser's authenticator answer, and submits the answer
// (and the ceremony's token) in its hidden fields. The server checks everything.
(function () {
  if (!window.PublicKeyCredential) {
    document.querySelectorAll("form[data-passkey]").forEach(function (form) {
      form.hidden = true;
    });
    return;
  }

  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) { return null; }
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeIds(list) {
    (list || []).forEach(function (c) { c.id = toBytes(c.id); });
  }

  function create(options) {
    var pk = options.publicKey;
    pk.challenge = toBytes(pk.challenge);
    pk.user.id = toBytes(pk.user.id);
    decodeIds(pk.excludeCredentials);
    return navigator.credentials.create({ publicKey: pk }).then(function (c) {
      return {
        id: c.id,
        rawId: toText(c.rawId),
        type: c.type,
        response: {
          attestationObject: toText(c.response.attestationObject),
          clientDataJSON: toText(c.response.clientDataJSON),
          transports: c.response.getTransports ? c.response.getTransports() : undefined
        },
        extensions: c.getClientExtensionResults()
      };
    });
  }

  function get(options) {
    var pk = options.publicKey;
    pk.challenge = toBytes(pk.challenge);
    decodeIds(pk.allowCredentials);
    return navigator.credentials.get({ publicKey: pk }).then(function (c) {
      return {
        id: c.id,
        rawId: toText(c.rawId),
        type: c.type,
        response: {
          authenticatorData: toText(c.response.authenticatorData),
          clientDataJSON: toText(c.response.clientDataJSON),
          signature: toText(c.response.signature),
          userHandle: toText(c.response.userHandle)
        },
        extensions: c.getClientExtensionResults()
      };
    });
  }

  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    var error = form.querySelector("[data-passkey-error]");
    var button = form.querySelector("button[type=submit]");
    var say = function (message) {
      error.textContent = message;
      error.hidden = false;
      button.disabled = false;
    };
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) { return; }
      error.hidden = true;
      button.disabled = true;
      fetch(form.getAttribute("data-options"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(form)).toString()
      }).then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) { throw new Error(body.error || "The server refused: try again."); }
          return body;
        });
      }).then(function (body) {
        if (body.token && form.elements.token) { form.elements.token.value = body.token; }
        var ceremony = form.getAttribute("data-passkey") === "create" ? create : get;
        return ceremony(body.options);
      }).then(function (answer) {
        form.elements.credential.value = JSON.stringify(answer);
        // The password proved who asked for the options: it is not sent again.
        if (form.elements.password) {
          form.elements.password.required = false;
          form.elements.password.value = "";
        }
        form.submit();
      }).catch(function (e) {
        if (e && e.name === "NotAllowedError") {
          say("The passkey was not used (cancelled, or it took too long): try again.");
        } else if (e && e.name === "InvalidStateError") {
          say("This device already holds a passkey of yours for this account.");
        } else {
          say((e && e.message) || "The passkey did not work: try again.");
        }
      });
    });
  });
})();
