"""The leaderboard as one static HTML page: inline CSS and JS, no external assets, no network.

Tables sort by clicking a header (numbers best-first on the first click, again to reverse;
empty cells always last). ``leaderboard.html#sort=<table id>.<column>[,...]`` replays those
clicks on load, which makes a sorted view linkable and lets tests check the sort headless.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rsssl.results.leaderboard import Cell, Table

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #fff; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
.note { max-width: 60rem; color: #444; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; white-space: nowrap; }
td.num { text-align: right; }
th { background: #f3f5f7; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.best { font-weight: 700; background: #e6f4ea; }
td.tied { font-style: italic; background: #f3faf5; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots figure { margin: 0; } .plots img { max-width: 640px; border: 1px solid #d0d7de; }
"""

_JS = """
(function () {
  function empty(v) { return v === undefined || v === ""; }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var num = th.dataset.type === "num", cur = th.getAttribute("aria-sort");
    var dir = cur === "ascending" ? "descending" : cur === "descending" ? "ascending" : th.dataset.first;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      if (empty(x) || empty(y)) { return empty(x) - empty(y); }
      var c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return dir === "ascending" ? c : -c;
    });
    table.tHead.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("thead th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(th); } });
  });
  var m = /sort=([^&]*)/.exec(location.hash);
  (m ? decodeURIComponent(m[1]).split(",") : []).forEach(function (spec) {
    var i = spec.lastIndexOf("."), table = document.getElementById(spec.slice(0, i));
    var th = table && table.tHead.rows[0].cells[Number(spec.slice(i + 1))];
    if (th) { th.click(); }
  });
})();
"""


def _inline_code(text: str) -> str:
    """Escape text and turn the note's markdown (`code`, **bold**, *italics*) into HTML."""
    html = re.sub(r"`([^`]*)`", r"<code>\1</code>", escape(text))
    html = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", html)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", html)


def _th(header: str, better: str) -> str:
    kind = "num" if better else "text"
    first = "ascending" if better in ("", "low") else "descending"
    return f'<th tabindex="0" data-type="{kind}" data-first="{first}" scope="col">{escape(header)}</th>'


def _td(cell: Cell, numeric: bool) -> str:
    value = "" if cell.sort is None else repr(cell.sort) if numeric else str(cell.sort)
    classes = " ".join(c for c in ("num" if numeric else "", cell.mark if cell.text else "") if c)
    attr = f' class="{classes}"' if classes else ""
    return f'<td{attr} data-v="{escape(value)}">{escape(cell.text)}</td>'


def _table(table: Table, level: str = "h2") -> str:
    head = "".join(_th(h, b) for h, b in zip(table.headers, table.better, strict=True))
    body = "\n".join(
        "<tr>" + "".join(_td(c, bool(b)) for c, b in zip(row, table.better, strict=True)) + "</tr>"
        for row in table.rows
    )
    note = f'\n<p class="note">{_inline_code(table.note)}</p>' if table.note else ""
    return (
        f'<{level}>{escape(table.title)}</{level}>\n<div class="wrap"><table id="{escape(table.id)}">\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>{note}"
    )


def render_html(
    title: str,
    note: str,
    tables: Sequence[Table],
    images: Sequence[tuple[str, str]],
    ranking_note: str = "",
    ranking: Sequence[Table] = (),
    ranking_title: str = "",
) -> str:
    """The complete page; ``images`` are (relative src, caption) pairs of the plots. Where there is
    a ``ranking_note``, a ``ranking_title`` section with it and the ``ranking`` tables comes first."""
    paragraphs = "\n".join(f'<p class="note">{_inline_code(p)}</p>' for p in note.split("\n\n"))
    figures = "\n".join(
        f'<figure><img src="{escape(src)}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption>'
        "</figure>"
        for src, caption in images
    )
    plots = f'<h2>Label efficiency</h2>\n<div class="plots">\n{figures}\n</div>' if images else ""
    tables_html = "\n".join(_table(t) for t in tables)
    if ranking_note:
        section = [f"<h2>{escape(ranking_title)}</h2>", f'<p class="note">{_inline_code(ranking_note)}</p>']
        tables_html = "\n".join([*section, *(_table(t, "h3") for t in ranking), tables_html])
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<h1>{escape(title)}</h1>\n{paragraphs}\n{tables_html}\n{plots}\n<script>{_JS}</script>\n"
        "</body>\n</html>\n"
    )
