"""HTML building blocks of the report: one self-contained page, images embedded as data URIs.

The page carries one small script: it records script errors and images that did not load, and sets
``data-check`` on the root element to ``ok`` or ``errors`` once the page has loaded (the browser test
reads it from the rendered DOM; a reader sees the problems listed at the bottom).
"""

from __future__ import annotations

import base64
import html

import numpy as np
import pandas as pd

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0 auto; max-width: 1280px; padding: 0 24px 60px; }
h1 { font-size: 26px; margin: 28px 0 4px; }
h2 { font-size: 21px; margin-top: 40px; border-bottom: 2px solid #dde3ee; }
h3 { font-size: 17px; margin-top: 26px; } nav { font-size: 14px; margin: 8px 0 18px; }
nav a { margin-right: 14px; } .muted { color: #5d6678; font-size: 13px; }
.banner { background: #fff4d6; border: 1px solid #e8c35a; padding: 10px 14px; border-radius: 6px;
          margin: 14px 0; }
.banner.bad { background: #fde7e7; border-color: #d46a6a; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 13.5px; }
th, td { border: 1px solid #d7dce6; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f1f4f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .paper { display: block; color: #5d6678; font-size: 11.5px; }
tr.missing td { background: #f6f6f6; color: #8a8f99; } .leak { color: #b00020; font-weight: 600; }
.clean { color: #1b7f3b; } figure { margin: 14px 0 24px; }
figure img { max-width: 100%; border: 1px solid #e3e7ef; }
figcaption { font-size: 13px; color: #5d6678; margin-top: 4px; } pre { background: #f6f8fb; padding: 10px;
  overflow-x: auto; font-size: 12px; border: 1px solid #e3e7ef; }
details summary { cursor: pointer; } .grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid figure { flex: 1 1 380px; margin: 0; }
"""

CHECK_SCRIPT = """
window.reportProblems = [];
window.addEventListener("error", function (event) {
  var target = event.target;
  if (target && target !== window && (target.src || target.href)) {
    window.reportProblems.push("could not load " + (target.alt || target.tagName));
  } else {
    window.reportProblems.push("script error: " + event.message);
  }
}, true);
window.addEventListener("load", function () {
  var images = document.images;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) {
      window.reportProblems.push("broken image: " + (images[i].alt || i));
    }
  }
  var list = document.getElementById("page-problems");
  window.reportProblems.forEach(function (text) {
    var item = document.createElement("li"); item.textContent = text; list.appendChild(item);
  });
  document.documentElement.setAttribute("data-images", String(images.length));
  document.documentElement.setAttribute("data-check", window.reportProblems.length ? "errors" : "ok");
});
"""


def esc(value) -> str:
    return html.escape(str(value))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure(data: bytes, caption: str, mime: str = "image/png", alt: str = "") -> str:
    return (
        f'<figure><img src="{data_uri(data, mime)}" alt="{esc(alt or caption)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{text}</p>' if cls else f"<p>{text}</p>"


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return '<td class="num">—</td>'
    if isinstance(value, bool | np.bool_):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | np.integer):
        return f'<td class="num">{int(value)}</td>'
    if isinstance(value, float | np.floating):
        return (
            f'<td class="num">{value:.3g}</td>' if abs(value) < 1000 else f'<td class="num">{value:,.0f}</td>'
        )
    return f"<td>{esc(value)}</td>"


def frame_table(frame: pd.DataFrame, empty: str = "none", status_column: str | None = None) -> str:
    """A DataFrame as an HTML table; a status column's LEAK/clean values are coloured."""
    if frame is None or frame.empty:
        return paragraph(esc(empty), "muted")
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            if column == status_column and isinstance(value, str):
                cls = "leak" if value.upper() == "LEAK" else ("clean" if value == "clean" else "")
                cells.append(f'<td class="{cls}">{esc(value)}</td>')
            else:
                cells.append(_cell(value))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def document(title: str, nav: list[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n<script>{CHECK_SCRIPT}</script>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<nav>{links}</nav>\n{body}\n"
        '<footer class="muted"><p>Page check (scripts and images, filled in by the browser):</p>'
        '<ul id="page-problems"></ul></footer>\n</body>\n</html>\n'
    )
