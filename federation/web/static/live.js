// The feed's only script: new items appear without a reload (server-sent events) and
// times are shown in the reader's zone. Everything else works without it. Other clubs'
// text is only ever set with textContent, never parsed as HTML.
"use strict";
(function () {
  var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = fmt.format(d); t.title = t.getAttribute("datetime"); }
    });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text) { e.textContent = text; }
    return e;
  }
  function render(item) {
    var li = el("li", "item fresh kind-" + item.kind);
    li.id = "e-" + item.id;
    var art = el("article");
    var meta = el("p", "meta");
    var club = el("a", "club", item.club_name);
    club.href = "/clubs/" + encodeURIComponent(item.club);
    meta.append(club, el("span", "kind", item.kind));
    var time = el("time", "", item.time);
    time.setAttribute("datetime", item.time);
    meta.append(time);
    art.append(meta, el("h3", "title", item.title));
    if (item.text) { art.append(el("p", "text", item.text)); }
    var proof = el("p", "proof");
    var link = el("a", "", "Signed event");
    link.href = "/events/" + encodeURIComponent(item.id);
    link.rel = "nofollow";
    proof.append(link);
    art.append(proof);
    li.append(art);
    localise(li);
    return li;
  }
  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    document.querySelectorAll("[data-zone]").forEach(function (z) { z.textContent = "your local time (" + zone + ")"; });
    var list = document.querySelector("[data-live]");
    var status = document.querySelector("[data-live-status]");
    if (!list || !window.EventSource) { return; }
    var source = new EventSource(list.getAttribute("data-live"));
    source.addEventListener("item", function (e) {
      var item = JSON.parse(e.data);
      if (document.getElementById("e-" + item.id)) { return; }
      var empty = list.querySelector(".empty");
      if (empty) { empty.remove(); }
      list.prepend(render(item));
      if (status) { status.textContent = "New: " + item.club_name + ": " + item.title; }
    });
  });
})();
