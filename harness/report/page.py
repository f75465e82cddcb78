"""The HTML report's page: one template, every piece of text escaped, plotly.js inlined once.

A report must open years later on a laptop without network (a CI artifact, an attachment to
an incident review), so nothing is fetched: the plotly.js bundle that ships with the Python
package is written into the page's head once, and each figure is a div with its data inline
(``data-plot`` names it, for tests and for people reading the source). Text from result files
(scenario and run names, reasons, log lines) is escaped with ``html.escape`` where it lands in
HTML, and with ``label`` where plotly draws it, since plotly reads a subset of HTML in titles,
legends and hover text.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from harness import __version__

#: plotly's options for every figure: no logo, no link to plotly's cloud, resizes with the page.
_CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False,
           "toImageButtonOptions": {"format": "png", "scale": 2}}  # fmt: skip

#: Verdicts, decisions and classes, by the colour their badge gets.
_TONE = {
    "PASS": "good", "PROMOTE": "good", "FOUND": "good", "Pass": "good", "measured": "good",
    "WARN": "warn", "HOLD": "warn", "ABOVE": "warn", "Low": "warn", "High": "warn",
    "FAIL": "bad", "ROLLBACK": "bad", "NONE": "bad", "INVALID": "bad", "launch_failed": "bad",
    "error": "bad", "INCONCLUSIVE": "unsure", "UNDECIDED": "unsure", "NoData": "unsure",
    "interrupted": "unsure",
}  # fmt: skip

_STYLE = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa;
  --good:#1a7f37; --warn:#9a6700; --bad:#cf222e; --unsure:#8250df; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 17px; margin: 26px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; }
.meta, .note { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
  font-size: 12px; color: #fff; background: var(--muted); white-space: nowrap; }
.badge.big { font-size: 16px; padding: 2px 12px; vertical-align: 3px; }
.good { background: var(--good); } .warn { background: var(--warn); }
.bad { background: var(--bad); } .unsure { background: var(--unsure); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.reason { max-width: 520px; color: var(--muted); }
pre { background: var(--soft); border: 1px solid var(--line); padding: 8px 10px; overflow-x: auto;
  font-size: 12px; margin: 6px 0; white-space: pre-wrap; word-break: break-all; }
.row { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; margin: 8px 0; }
@media (max-width: 1000px) { .row { grid-template-columns: minmax(0, 1fr); } }
.plot { border: 1px solid var(--line); border-radius: 6px; padding: 4px; min-width: 0; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""


def escape(text: object) -> str:
    """Text for HTML, quotes included (it may land in an attribute)."""
    return html.escape(str(text), quote=True)


def label(text: object) -> str:
    """Text for a plotly title, legend entry or hover line: plotly reads a few HTML tags in
    them, so a run or scenario name is escaped to be shown as written."""
    return html.escape(str(text), quote=False)


def badge(text: str, big: bool = False, like: str | None = None) -> str:
    """A coloured verdict, decision or status (its colour says good, warning, bad, unsure);
    ``like``: colour it as that word would be."""
    tone = _TONE.get(like or text, "")
    return f'<span class="badge{" big" if big else ""} {tone}">{escape(text)}</span>'


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell: text (escaped) or ready HTML (``raw``), numeric cells right-aligned."""

    text: str
    num: bool = False
    raw: bool = False
    cls: str = ""


def num(text: str) -> Cell:
    """A number's cell: right-aligned, digits in columns."""
    return Cell(text, num=True)


def raw(markup: str) -> Cell:
    """A cell of markup the caller built from escaped pieces (a badge, a link)."""
    return Cell(markup, raw=True)


@dataclass(slots=True)
class Page:
    """A report page built top to bottom; ``render`` gives the whole HTML document."""

    title: str
    blocks: list[str] = field(default_factory=list)
    _row: list[str] | None = None

    def heading(self, text: str, level: int = 2, extra: str = "") -> None:
        """A heading; ``extra`` is HTML placed after the escaped text (a badge)."""
        self.end_row()
        self.blocks.append(f"<h{level}>{escape(text)}{' ' + extra if extra else ''}</h{level}>")

    def text(self, text: str, cls: str = "") -> None:
        """A paragraph of escaped text; ``cls`` "meta" or "note" greys it."""
        self.end_row()
        attr = f' class="{cls}"' if cls else ""
        self.blocks.append(f"<p{attr}>{escape(text)}</p>")

    def pre(self, text: str) -> None:
        """Preformatted text (a command line, a patch, a log tail), escaped."""
        self.end_row()
        self.blocks.append(f"<pre>{escape(text)}</pre>")

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Cell | str]]) -> None:
        """A table; string cells are escaped text, ``Cell`` says how to show the rest."""
        self.end_row()
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
        self.blocks.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                           f"<tbody>{body}</tbody></table></div>")  # fmt: skip

    def figure(self, name: str, fig: go.Figure, wide: bool = False) -> None:
        """A plotly figure in a ``div.plot[data-plot=name]``. Figures follow each other in a
        grid row (two a row on a wide screen) until other content or a ``wide`` one comes."""
        body = pio.to_html(fig, include_plotlyjs=False, full_html=False, config=_CONFIG,
                           div_id=f"plot-{name}", validate=True)  # fmt: skip
        div = f'<div class="plot" data-plot="{escape(name)}">{body}</div>'
        if wide:
            self.end_row()
            self.blocks.append(div)
            return
        if self._row is None:
            self._row = []
        self._row.append(div)

    def end_row(self) -> None:
        """Close the grid row of figures in progress, if any."""
        if self._row:
            self.blocks.append('<div class="row">' + "".join(self._row) + "</div>")
        self._row = None

    def render(self) -> str:
        """The document: styles, plotly.js once, then the blocks."""
        self.end_row()
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{_STYLE}</style>"
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f"<script>{get_plotlyjs()}</script></head>\n<body><main>\n"
            + "\n".join(self.blocks)
            + f"\n<footer>Written by llm-slo-harness {escape(__version__)} "
            "(harness report); opens offline, nothing is fetched.</footer>\n"
            "</main></body></html>\n"
        )


def _cell(cell: Cell | str) -> str:
    if isinstance(cell, str):
        return f"<td>{escape(cell)}</td>"
    classes = " ".join(c for c in ("num" if cell.num else "", cell.cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{cell.text if cell.raw else escape(cell.text)}</td>"


def pretty_json(value: Any) -> str:
    """A JSON document for a <pre> block (escaped by ``Page.pre``)."""
    return json.dumps(value, indent=2, sort_keys=False, default=str)
