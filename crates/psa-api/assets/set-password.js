// The link carries its token after "#": browsers never send that part to a server, so it stays
// out of access logs and Referer headers. Move it into the form, then drop it from the address bar.
(function () {
  var field = document.getElementById("token");
  var token = decodeURIComponent(window.location.hash.replace(/^#/, ""));
  if (token) {
    field.value = token;
    history.replaceState(null, "", window.location.pathname);
  }
  if (!field.value) {
    document.getElementById("no-token").hidden = false;
    document.getElementById("set-password").hidden = true;
  }
  document.getElementById("set-password").addEventListener("submit", function (e) {
    var a = document.getElementById("password"), b = document.getElementById("password_confirm");
    if (a.value !== b.value) {
      b.setCustomValidity("The two passwords differ");
      b.reportValidity();
      e.preventDefault();
    } else {
      b.setCustomValidity("");
    }
  });
})();
