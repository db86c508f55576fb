// Exchanges the invitation token (from the URL fragment, never sent in a URL) for a session.
(function () {
  "use strict";
  var form = document.getElementById("start-form");
  var input = document.getElementById("token");
  var status = document.getElementById("status");

  function start(token) {
    status.textContent = "Checking your invitation...";
    fetch(form.dataset.sessionUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token })
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (response.ok && body.next) {
          window.location.replace(body.next);
        } else {
          status.textContent = "This invitation is not valid. Please check the link.";
          status.className = "error";
        }
      });
    }).catch(function () {
      status.textContent = "Cannot reach the server. Please try again.";
      status.className = "error";
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (input.value) { start(input.value.trim()); }
  });

  var params = new URLSearchParams(window.location.hash.slice(1));
  var token = params.get("token");
  if (token) {
    history.replaceState(null, "", window.location.pathname);
    start(token);
  }
})();
