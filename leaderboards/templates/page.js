(function () {
  "use strict";
  var table = document.getElementById("board");
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  // Sorting: numbers compare as numbers; a cell with no number (failed, missing, no rank) sorts last
  // whichever the direction. The first click uses the column's better-first direction.
  function sortBy(th, index) {
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "ascending" ? "descending" : "ascending") : th.getAttribute("data-first");
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var numeric = th.getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].getAttribute("data-sort"), y = b.cells[index].getAttribute("data-sort");
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      if (numeric) { return sign * (parseFloat(x) - parseFloat(y)); }
      return sign * x.localeCompare(y);
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }
  headers.forEach(function (th, index) {
    if (!th.getAttribute("data-type")) { return; }
    th.tabIndex = 0;
    th.addEventListener("click", function () { sortBy(th, index); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th, index); }
    });
  });

  // Filters: model name substring, and which frameworks' columns show.
  var filter = document.getElementById("model-filter");
  filter.addEventListener("input", function () {
    var q = filter.value.toLowerCase();
    Array.prototype.forEach.call(tbody.rows, function (r) {
      r.hidden = r.getAttribute("data-model").toLowerCase().indexOf(q) < 0;
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input.fw-toggle"), function (box) {
    box.addEventListener("change", function () {
      var fw = box.value;
      Array.prototype.forEach.call(document.querySelectorAll("[data-fw]"), function (el) {
        if (el.getAttribute("data-fw") === fw) { el.classList.toggle("hidden-fw", !box.checked); }
      });
    });
  });

  // Provenance: clicking a number shows its provenance row in a panel (text only, never HTML).
  var detail = document.getElementById("detail");
  var list = detail.querySelector("dl");
  var names = Array.prototype.map.call(document.querySelectorAll("#provenance thead th"), function (th) {
    return th.textContent;
  });
  function show(id) {
    var row = document.getElementById(id);
    if (!row) { return; }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    Array.prototype.forEach.call(row.cells, function (td, i) {
      var text = td.textContent.trim();
      if (!text) { return; }
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = names[i] || "";
      dd.textContent = text;
      list.appendChild(dt);
      list.appendChild(dd);
    });
    detail.querySelector("a.jump").setAttribute("href", "#" + id);
    detail.hidden = false;
  }
  Array.prototype.forEach.call(document.querySelectorAll("a.v"), function (a) {
    a.addEventListener("click", function (e) {
      e.preventDefault();
      show(a.getAttribute("href").slice(1));
    });
  });
  detail.querySelector("button").addEventListener("click", function () { detail.hidden = true; });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") { detail.hidden = true; } });
})();
