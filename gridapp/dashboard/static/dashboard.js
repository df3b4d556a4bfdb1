// Live updates by polling with ETags (survives a server restart: a failed poll is simply retried),
// and the countdowns to each deadline.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var status = document.getElementById("live-status");
  var region = document.getElementById("live-region");
  // The state the page was rendered with: a change that lands before the first poll still refreshes.
  var etag = main.dataset.etag || null, pending = false;
  var every = 1000 * Number(main.dataset.pollSeconds || 5);

  function say(text) { if (status) status.textContent = text; }

  function busy() {
    // Never replace a form the user is filling in; refresh once they leave it.
    var active = document.activeElement;
    return region && active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function refresh() {
    document.dispatchEvent(new CustomEvent("gridapp:changed"));
    if (!region) return;
    if (busy()) { pending = true; return; }
    pending = false;
    fetch(region.dataset.refreshUrl, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok || r.redirected) throw new Error(r.status); return r.text(); })
      .then(function (html) { region.innerHTML = html; tick(); region.dispatchEvent(new CustomEvent("gridapp:refreshed", {bubbles: true})); })
      .catch(function () { pending = true; });
  }

  function poll() {
    var headers = etag ? {"If-None-Match": '"' + etag + '"'} : {};
    fetch(main.dataset.liveUrl, {credentials: "same-origin", cache: "no-store", headers: headers})
      .then(function (r) {
        if (r.redirected) { say("登录已过期，请重新登录"); return; }
        if (r.status === 304) { say(""); if (pending) refresh(); return; }
        if (!r.ok) throw new Error(r.status);
        return r.json().then(function (body) {
          var changed = etag !== null && body.etag !== etag;
          etag = body.etag;
          say("");
          if (changed || pending) refresh();
        });
      })
      .catch(function () { say("连接中断，正在重试…"); })
      .then(function () { setTimeout(poll, every); });
  }

  function two(n) { return n < 10 ? "0" + n : String(n); }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-due]").forEach(function (el) {
      var left = Math.round((Date.parse(el.dataset.due) - now) / 1000);
      var late = left < 0, s = Math.abs(left);
      var text = Math.floor(s / 3600) + "小时" + two(Math.floor(s % 3600 / 60)) + "分" + two(s % 60) + "秒";
      el.textContent = late ? "已超时 " + text : "剩余 " + text;
      el.classList.toggle("late", late);
      el.classList.toggle("soon", !late && left < 3600);
    });
  }

  if (main.dataset.liveUrl && status) { poll(); }
  document.addEventListener("focusout", function () { if (pending) setTimeout(function () { if (!busy()) refresh(); }, 0); });
  tick();
  setInterval(tick, 1000);
})();
