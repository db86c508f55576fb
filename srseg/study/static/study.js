// One trial: enable the choices once both images are decoded, time the answer from that moment,
// accept clicks and keys (Left/1, Right/2), post the vote with the session's CSRF token.
(function () {
  "use strict";
  var trial = document.getElementById("trial");
  if (!trial) { return; }
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var status = document.getElementById("status");
  var buttons = { left: document.getElementById("choose-left"), right: document.getElementById("choose-right") };
  var shownAt = null;
  var sending = false;

  function loaded(img) {
    if (img.complete && img.naturalWidth > 0) { return Promise.resolve(); }
    return new Promise(function (resolve, reject) {
      img.addEventListener("load", resolve, { once: true });
      img.addEventListener("error", reject, { once: true });
    });
  }

  var images = Array.prototype.slice.call(document.querySelectorAll("main img"));
  Promise.all(images.map(loaded)).then(function () {
    buttons.left.disabled = false;
    buttons.right.disabled = false;
    shownAt = performance.now();
    trial.dataset.ready = "1";
  }, function () {
    status.textContent = "An image failed to load. Please reload the page.";
    status.className = "error";
  });

  function choose(side) {
    if (shownAt === null || sending) { return; }
    sending = true;
    var elapsed = Math.round(performance.now() - shownAt);
    buttons.left.disabled = true;
    buttons.right.disabled = true;
    status.textContent = "Saving...";
    fetch(trial.dataset.voteUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ pair_id: trial.dataset.pairId, side: side, response_ms: elapsed })
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if ((response.ok || response.status === 409) && body.next) {
          window.location.assign(body.next);
          return;
        }
        throw new Error(body.error || ("HTTP " + response.status));
      });
    }).catch(function (error) {
      sending = false;
      buttons.left.disabled = false;
      buttons.right.disabled = false;
      status.textContent = "Could not save your answer (" + error.message + "). Please try again.";
      status.className = "error";
    });
  }

  buttons.left.addEventListener("click", function () { choose("left"); });
  buttons.right.addEventListener("click", function () { choose("right"); });
  document.addEventListener("keydown", function (event) {
    if (event.repeat || event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.key === "ArrowLeft" || event.key === "1") { event.preventDefault(); choose("left"); }
    if (event.key === "ArrowRight" || event.key === "2") { event.preventDefault(); choose("right"); }
  });
})();
