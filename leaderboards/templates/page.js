(function () {
  "use strict";
  var table = document.getElementById("board");
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  // A big board's rows come as JSON (publish.board_rows), each made into exactly the row the template
  // writes for a small board, when it is first laid out. Texts are set as textContent: a model's name
  // is never markup.
  var rowData = document.getElementById("board-rows");
  var data = rowData ? JSON.parse(rowData.textContent) : null;
  var hiddenFw = {};  // frameworks switched off: their cells are hidden in rows made later too
  function td(text, sort, cls) {
    var cell = document.createElement("td");
    if (cls) { cell.className = cls; }
    if (sort !== null) { cell.setAttribute("data-sort", sort); }
    cell.textContent = text;
    return cell;
  }
  function makeRow(r) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-model", r[0]);
    tr.appendChild(td(r[1], r[2]));
    tr.appendChild(td(r[0], r[0], "model text"));
    tr.appendChild(td(r[3], r[4]));
    tr.appendChild(td(r[5], r[5]));
    r[9].forEach(function (c, j) {
      var cell = document.createElement("td"), a = document.createElement("a");
      cell.className = c[0] + (data.avg[j] ? "" : " not-averaged");
      cell.setAttribute("data-fw", data.fw[j]);
      cell.setAttribute("data-sort", c[2]);
      a.className = "v";
      a.href = "#";
      if (c[3]) { a.title = c[3]; }
      a.textContent = c[1];
      cell.appendChild(a);
      tr.appendChild(cell);
    });
    tr.appendChild(td(r[6], r[7]));
    tr.appendChild(td(r[8], null, "text"));
    r[10].forEach(function (ci) { tr.appendChild(td(ci, null)); });
    headers.forEach(function (th, index) {
      if (hiddenFw[th.getAttribute("data-fw")]) { tr.cells[index].classList.add("hidden-fw"); }
    });
    return tr;
  }

  // Every row, in the order shown: {r: its JSON, tr: its element once made, hidden: filtered out}. A
  // big board lays out the first `limit` rows that pass the filter and keeps the others aside until
  // asked: laying out 500 x 86 cells took Chromium 0.6-0.9 s, 50 rows a tenth of it (and making every
  // row's elements first, another 0.1 s). Sorting and filtering work on every row.
  var allRows = data ? data.rows.map(function (r) { return { r: r, tr: null, hidden: false }; })
    : Array.prototype.map.call(tbody.rows, function (tr) { return { r: null, tr: tr, hidden: false }; });
  var limit = data ? data.page : Infinity;
  var more = null;
  if (data) {
    more = document.createElement("p");
    more.className = "note";
    more.id = "board-more";
    var moreText = more.appendChild(document.createElement("span"));
    var moreButton = more.appendChild(document.createElement("button"));
    moreButton.type = "button";
    moreButton.addEventListener("click", function () { limit = Infinity; place(); });
    table.parentNode.parentNode.insertBefore(more, table.parentNode.nextSibling);
  }
  function rowOf(e) {
    if (!e.tr) { e.tr = makeRow(e.r); e.tr.hidden = e.hidden; }
    return e.tr;
  }
  function place() {
    var frag = document.createDocumentFragment(), shown = 0, passing = 0;
    allRows.forEach(function (e) {
      if (!e.hidden) { passing++; }
      if (shown < limit && (e.tr || !e.hidden)) {
        frag.appendChild(rowOf(e));  // a filtered-out row already made stays, hidden
        if (!e.hidden) { shown++; }
      } else if (e.tr && e.tr.parentNode) {
        e.tr.parentNode.removeChild(e.tr);
      }
    });
    tbody.appendChild(frag);
    if (more) {
      more.hidden = shown >= passing;
      moreText.textContent = "Showing the first " + shown + " of " + passing + " models in this order (the others are sorted and filtered too). ";
      moreButton.textContent = "show all " + passing;
    }
  }
  place();

  // A row's sort key under header `index`: what the cell's data-sort holds (read from the JSON for a
  // row not made yet: rank, model, average, coverage, each column, rank range).
  var columnCount = data ? data.fw.length : 0;
  function sortKey(e, index) {
    if (!e.r) { return e.tr.cells[index].getAttribute("data-sort"); }
    var r = e.r;
    if (index < 4) { return [r[2], r[0], r[4], r[5]][index]; }
    if (index < 4 + columnCount) { return r[9][index - 4][2]; }
    return index === 4 + columnCount ? r[7] : "";
  }

  // Sorting: numbers compare as numbers; a cell with no number (failed, missing, no rank) sorts last
  // whichever the direction. The first click uses the column's better-first direction.
  function sortBy(th, index) {
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "ascending" ? "descending" : "ascending") : th.getAttribute("data-first");
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var numeric = th.getAttribute("data-type") === "num";
    allRows.sort(function (a, b) {
      var x = sortKey(a, index), y = sortKey(b, index);
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      if (numeric) { return sign * (parseFloat(x) - parseFloat(y)); }
      return sign * x.localeCompare(y);
    });
    place();
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
    allRows.forEach(function (e) {
      e.hidden = (e.r ? e.r[0] : e.tr.getAttribute("data-model")).toLowerCase().indexOf(q) < 0;
      if (e.tr) { e.tr.hidden = e.hidden; }
    });
    place();
  });
  Array.prototype.forEach.call(document.querySelectorAll("input.fw-toggle"), function (box) {
    box.addEventListener("change", function () {
      var fw = box.value;
      hiddenFw[fw] = !box.checked;
      headers.forEach(function (th, index) {
        if (th.getAttribute("data-fw") !== fw) { return; }
        th.classList.toggle("hidden-fw", !box.checked);
        // the rows set aside too; the interval columns' cells carry no data-fw (a smaller page)
        allRows.forEach(function (e) { if (e.tr) { e.tr.cells[index].classList.toggle("hidden-fw", !box.checked); } });
      });
    });
  });

  // A cell opens into its provenance and samples, read from `cells/c<j>.js` beside the page: a script
  // that calls bbCell(data) (the page opens from disk, where Chromium refuses fetch() of file:// URLs).
  // Every text from the data is set as textContent: a model's output is shown, never run.
  var Z95 = 1.959963984540054;
  var detail = document.getElementById("detail");
  var list = detail.querySelector("dl");
  var where = detail.querySelector(".where");
  var evidence = document.getElementById("evidence");
  var columns = headers.filter(function (th) { return th.hasAttribute("data-bench"); });
  var firstColumn = headers.indexOf(columns[0]);
  var loaded = {}, waiting = {};
  window.bbCell = function (data) {
    loaded[data.j] = data;
    (waiting[data.j] || []).forEach(function (done) { done(data); });
    delete waiting[data.j];
  };
  function load(j, done) {
    if (loaded[j]) { done(loaded[j]); return; }
    if (waiting[j]) { waiting[j].push(done); return; }
    waiting[j] = [done];
    var script = document.createElement("script");
    script.src = "cells/c" + j + ".js";
    script.onerror = function () { delete waiting[j]; message("Could not read cells/c" + j + ".js beside this page."); };
    document.head.appendChild(script);
  }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function message(text) { clear(evidence); evidence.appendChild(el("p", text, "note")); }
  function grid(head, rows, id) {
    var t = el("table"), thead = el("thead"), tr = el("tr"), tbody = el("tbody");
    if (id) { t.id = id; }
    head.forEach(function (h) { tr.appendChild(el("th", h)); });
    thead.appendChild(tr);
    t.appendChild(thead);
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v) { row.appendChild(v instanceof Node ? wrap(v) : el("td", v === null ? "" : v)); });
      tbody.appendChild(row);
    });
    t.appendChild(tbody);
    return t;
  }
  function wrap(node) { var td = el("td"); td.appendChild(node); return td; }
  function score(v) { return v === null || v === undefined ? "" : String(Math.round(v * 10000) / 10000); }
  function fixed(v) { return (v >= 0 ? "+" : "") + v.toFixed(2); }

  // Paired comparison on shared samples, as leaderboards/stats.py computes it (Miller 2024): the mean
  // of the differences, its standard error (clustered where every sample has a cluster key), and
  // McNemar's exact test when both sides scored 0/1.
  function mcnemar(b, c) {
    var n = b + c, k = Math.min(b, c), term = Math.pow(0.5, n), total = 0, i;
    if (n === 0) { return 1; }
    for (i = 0; i <= k; i++) { total += term; term = term * (n - i) / (i + 1); }
    return Math.min(1, 2 * total);
  }
  function paired(mine, theirs) {
    var ids = Object.keys(mine).filter(function (id) {
      return theirs[id] !== undefined && mine[id][0] !== null && theirs[id][0] !== null;
    });
    var n = ids.length;
    if (n < 2) { return null; }
    var d = ids.map(function (id) { return mine[id][0] - theirs[id][0]; });
    var mean = d.reduce(function (a, b) { return a + b; }, 0) / n;
    var groups = ids.map(function (id) { return mine[id][1]; });
    var distinct = {};
    groups.forEach(function (g) { distinct[g] = 0; });
    var se;
    if (groups.every(function (g) { return g; }) && Object.keys(distinct).length > 1) {
      d.forEach(function (x, i) { distinct[groups[i]] += x - mean; });
      se = Math.sqrt(Object.keys(distinct).reduce(function (a, g) { return a + distinct[g] * distinct[g]; }, 0)) / n;
    } else {
      se = Math.sqrt(d.reduce(function (a, x) { return a + (x - mean) * (x - mean); }, 0) / (n - 1) / n);
    }
    var binary = ids.every(function (id) {
      return (mine[id][0] === 0 || mine[id][0] === 1) && (theirs[id][0] === 0 || theirs[id][0] === 1);
    });
    var p = null;
    if (binary) {
      var b = 0, c = 0;
      ids.forEach(function (id) { if (mine[id][0] > theirs[id][0]) { b++; } else if (mine[id][0] < theirs[id][0]) { c++; } });
      p = mcnemar(b, c);
    }
    return { n: n, diff: mean, se: se, low: mean - Z95 * se, high: mean + Z95 * se, p: p };
  }
  function byId(row) {
    var out = {};
    row.s.forEach(function (s) { out[s[0]] = [s[2], s[8]]; });
    return out;
  }
  function same(a, b) { return (a || "").trim() === (b || "").trim(); }
  // Why frameworks scored one sample differently, as leaderboards/evidence.py tells it.
  function cause(entries) {
    if (entries.every(function (e) { return same(e.extracted, entries[0].extracted); })) { return "normalisation/metric"; }
    if (entries.every(function (e) { return same(e.output, entries[0].output); })) { return "answer extraction"; }
    // Chat messages are written as "role: content" lines; anything else is a rendered prompt (a chat template
    // applied): the two kinds cannot be compared literally.
    var kinds = entries.map(function (e) { return /^(system|user|assistant): /.test(e.input || "") ? "m" : "p"; });
    if (kinds.some(function (k) { return k !== kinds[0]; })) {
      return "different output; inputs not comparable (rendered text vs chat messages)";
    }
    if (!entries.every(function (e) { return e.input === entries[0].input; })) { return "different prompt"; }
    return "different output to the same prompt";
  }
  function siblings(j) {
    var bench = columns[j].getAttribute("data-bench");
    return columns.map(function (th, k) { return k; }).filter(function (k) {
      return k !== j && columns[k].getAttribute("data-bench") === bench;
    });
  }
  function loadAll(indexes, done) {
    var left = indexes.length, got = {};
    if (!left) { done(got); return; }
    indexes.forEach(function (k) { load(k, function (data) { got[k] = data; if (--left === 0) { done(got); } }); });
  }
  function entry(data, model, id) {
    var row = data.rows[model];
    if (!row) { return null; }
    for (var i = 0; i < row.s.length; i++) {
      var s = row.s[i];
      if (s[0] === id) {
        return { framework: data.framework, metric: data.metric, status: s[1], score: s[2], input: data.inputs[s[3]],
                 output: s[4], extracted: s[5], reference: s[6], judge: s[7] };
      }
    }
    return null;
  }

  function renderSamples(data, model, box) {
    var row = data.rows[model];
    var filter = el("select");
    ["all", "right", "wrong", "invalid"].forEach(function (name) {
      var o = el("option", name); o.value = name; filter.appendChild(o);
    });
    filter.id = "ev-filter";
    var search = el("input");
    search.type = "search"; search.id = "ev-search"; search.placeholder = "search input, output, answer…";
    var counts = el("span", "", "note");
    var holder = el("div", null, "scroll");
    var focus = el("div");
    focus.id = "ev-sample";
    var controls = el("div", null, "controls");
    controls.appendChild(el("label", "show ")).appendChild(filter);
    controls.appendChild(search);
    controls.appendChild(counts);
    box.appendChild(controls);
    box.appendChild(holder);
    box.appendChild(focus);
    function draw() {
      var want = filter.value, q = search.value.toLowerCase();
      var shown = row.s.filter(function (s) {
        if (want === "right" && s[1] !== "right") { return false; }
        if (want === "wrong" && s[1] === "right") { return false; }
        if (want === "invalid" && s[1] !== "invalid") { return false; }
        if (!q) { return true; }
        return [s[0], data.inputs[s[3]], s[4], s[5], s[6]].join("\n").toLowerCase().indexOf(q) >= 0;
      });
      counts.textContent = shown.length + " of " + row.s.length + " samples";
      clear(holder);
      var rows = shown.slice(0, 500).map(function (s) {
        var input = el("div", data.inputs[s[3]], "text-block");
        var output = el("div", s[4], "text-block");
        var button = el("button", s[0]);
        button.type = "button";
        button.addEventListener("click", function () { compareSample(data, model, s[0], focus); });
        return [button, s[1], score(s[2]), input, output, s[5], s[6], s[7]];
      });
      holder.appendChild(grid(["sample", "status", "score", "input", "output", "extracted", "reference", "judge"], rows, "ev-samples"));
    }
    filter.addEventListener("change", draw);
    search.addEventListener("input", draw);
    draw();
  }

  function compareSample(data, model, id, box) {
    clear(box);
    box.appendChild(el("h4", "Sample " + id + ": other models, same column"));
    var others = Object.keys(data.rows).filter(function (m) { return m !== model; }).map(function (m) {
      var e = entry(data, m, id);
      return e ? [m, e.status, score(e.score), el("div", e.output, "text-block"), e.extracted] : null;
    }).filter(Boolean);
    box.appendChild(grid(["model", "status", "score", "output", "extracted"], others, "ev-models"));
    var j = data.j, indexes = siblings(j);
    var title = el("h4", "Sample " + id + ": " + model + " in other frameworks");
    box.appendChild(title);
    loadAll(indexes, function (got) {
      var mine = entry(data, model, id);
      var entries = [mine].concat(indexes.map(function (k) { return entry(got[k], model, id); })).filter(Boolean);
      var differ = entries.some(function (e) { return e.score !== entries[0].score; });
      var rows = entries.map(function (e) {
        return [e.framework + " " + e.metric, score(e.score), el("div", e.input, "text-block"),
                el("div", e.output, "text-block"), e.extracted];
      });
      box.appendChild(grid(["framework", "score", "input", "output", "extracted"], rows, "ev-frameworks"));
      box.appendChild(el("p", entries.length < 2 ? "No other framework scored this sample." :
        differ ? "Scores differ: " + cause(entries) + "." : "Every framework gave it the same score.", "note"));
    });
  }

  function renderPairs(data, model, box) {
    var mine = byId(data.rows[model]);
    var rows = [];
    Object.keys(data.rows).forEach(function (m) {
      if (m === model || !data.rows[m].s.length) { return; }
      var r = paired(mine, byId(data.rows[m]));
      if (!r) { return; }
      rows.push([m, data.rows[m].v === null ? "" : data.rows[m].v.toFixed(2), fixed(r.diff * 100),
                 "[" + fixed(r.low * 100) + ", " + fixed(r.high * 100) + "]", String(r.n),
                 r.p === null ? "" : r.p.toPrecision(3)]);
    });
    if (!rows.length) { return; }
    box.appendChild(el("h4", "Paired comparisons on shared samples (this model minus the other, 0-100)"));
    box.appendChild(grid(["model", "value", "difference", "95% CI", "shared samples", "McNemar p"], rows.slice(0, 50), "ev-pairs"));
  }

  function renderDiff(data, model, box) {
    clear(box);
    var indexes = siblings(data.j);
    if (!indexes.length) { box.appendChild(el("p", "No other framework scored this benchmark.", "note")); return; }
    loadAll(indexes, function (got) {
      var all = [data].concat(indexes.map(function (k) { return got[k]; }));
      var ids = data.rows[model] ? data.rows[model].s.map(function (s) { return s[0]; }) : [];
      var rows = [];
      ids.forEach(function (id) {
        var entries = all.map(function (d) { return entry(d, model, id); }).filter(Boolean);
        if (entries.length < 2 || entries.every(function (e) { return e.score === entries[0].score; })) { return; }
        var side = el("div");
        entries.forEach(function (e) {
          side.appendChild(el("div", e.framework + " " + e.metric + " = " + score(e.score) + " · output: " + e.output +
            " · extracted: " + e.extracted, "text-block"));
        });
        rows.push([id, cause(entries), side]);
      });
      box.appendChild(el("p", rows.length + " samples scored differently by " +
        all.map(function (d) { return d.framework; }).join(", "), "note"));
      box.appendChild(grid(["sample", "cause", "each framework"], rows, "ev-diff"));
    });
  }

  function render(model, data) {
    var row = data.rows[model];
    clear(list);
    clear(evidence);
    if (!row) { message("No such cell."); return; }
    row.p.forEach(function (text, i) {
      if (!text) { return; }
      list.appendChild(el("dt", data.names[i]));
      list.appendChild(el("dd", text));
    });
    evidence.appendChild(el("p", "95% interval: " + (row.ci || "not known"), "ci-line"));
    if (!row.s.length) {
      evidence.appendChild(el("p", "No samples stored for this cell.", "note"));
      return;
    }
    var diffButton = el("button", "diff across frameworks");
    diffButton.type = "button"; diffButton.id = "ev-diff-button";
    var diffBox = el("div"); diffBox.id = "ev-diff-out";
    diffButton.addEventListener("click", function () { renderDiff(data, model, diffBox); });
    evidence.appendChild(diffButton);
    evidence.appendChild(diffBox);
    renderSamples(data, model, evidence);
    renderPairs(data, model, evidence);
  }

  function open(model, j) {
    where.textContent = model + " × " + columns[j].getAttribute("data-key");
    clear(list);
    message("loading…");
    detail.hidden = false;
    load(j, function (data) { render(model, data); });
  }
  // one listener for every cell (20,000 of them on a 500 x 40 board)
  tbody.addEventListener("click", function (e) {
    var a = e.target.closest ? e.target.closest("a.v") : null;
    if (!a) { return; }
    e.preventDefault();
    var td = a.parentNode, tr = td.parentNode;
    open(tr.getAttribute("data-model"), td.cellIndex - firstColumn);
  });
  window.bbOpen = open; // for tests and scripted use: open(model, column index)
  detail.querySelector("button.close").addEventListener("click", function () { detail.hidden = true; });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") { detail.hidden = true; } });
})();
