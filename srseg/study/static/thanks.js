// Sends the optional free-text comment with the session's CSRF token.
(function () {
  "use strict";
  var form = document.getElementById("comment-form");
  if (!form) { return; }
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var status = document.getElementById("status");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    fetch(form.dataset.commentUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ comment: document.getElementById("comment").value })
    }).then(function (response) {
      status.textContent = response.ok ? "Comment saved. Thank you!" : "Could not save the comment.";
      status.className = response.ok ? "" : "error";
    }).catch(function () {
      status.textContent = "Cannot reach the server.";
      status.className = "error";
    });
  });
})();
