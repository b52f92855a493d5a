"""A coloured word-level diff (reference vs hypothesis) as self-contained HTML, with a legend of its colours."""
from __future__ import annotations

import html
from typing import Iterable, Optional

# One home for the diff's colours: the diff spans and the legend swatches are styled from this table (inline,
# so a legend swatch is exactly the colour of the span it names).
KIND_STYLES = {
    "eq": "color: #0f172a;",
    "sub-ref": "background: #fee2e2; color: #991b1b; text-decoration: line-through;",
    "sub-hyp": "background: #fef3c7; color: #92400e;",
    "del": "background: #fee2e2; color: #991b1b; text-decoration: line-through;",
    "ins": "background: #dcfce7; color: #166534; text-decoration: underline;",
}
# Legend entries: (label, kind); a substitution shows the reference word struck out, then the word heard.
LEGEND = (("correct", "eq"), ("reference word", "sub-ref"), ("substituted", "sub-hyp"),
          ("inserted", "ins"), ("deleted", "del"))

STYLE = """
<style>
.dld-diff {font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.95rem; line-height: 2.0;}
.dld-diff span {padding: 1px 4px; border-radius: 4px; margin-right: 2px;}
.dld-legend {font-size: 0.78rem; color: #475569; margin-top: 4px;}
.dld-legend span {padding: 0 4px; border-radius: 4px; margin-right: 2px;}
.dld-legend .dld-sep {margin-right: 10px;}
</style>
"""

# word_diff ops may be spelled in several ways (equal/match, sub/substitute/replace, del/delete, ins/insert).
_OPS = {"e": "eq", "m": "eq", "o": "eq", "c": "eq", "=": "eq",
        "s": "sub", "r": "sub", "d": "del", "i": "ins"}


def normalize_op(op: str) -> str:
    return _OPS.get(str(op).strip().lower()[:1], "sub")


def _span(kind: str, text: str, title: str = "") -> str:
    title_attr = f' title="{title}"' if title else ""
    return f'<span class="{kind}" style="{KIND_STYLES[kind]}"{title_attr}>{text}</span>'


def legend_html() -> str:
    """The legend: each label in the colours of the diff spans it names."""
    items = []
    for label, kind in LEGEND:
        items.append(_span(kind, label))
        # "reference word → substituted" stays one entry; a gap separates the others
        items.append(" → " if kind == "sub-ref" else '<span class="dld-sep"></span>')
    return '<div class="dld-legend">Legend: ' + "".join(items[:-1]) + "</div>"


def word_diff_html(ops: Iterable[tuple[str, Optional[str], Optional[str]]]) -> str:
    """ops: (op, ref_word, hyp_word) as returned by dld_core.metrics.word_diff."""
    parts = []
    for op, ref, hyp in ops:
        kind = normalize_op(op)
        ref_s, hyp_s = html.escape(ref or ""), html.escape(hyp or "")
        if kind == "eq":
            parts.append(_span("eq", ref_s or hyp_s))
        elif kind == "del":
            parts.append(_span("del", ref_s, "deleted"))
        elif kind == "ins":
            parts.append(_span("ins", hyp_s, "inserted"))
        else:
            parts.append(_span("sub-ref", ref_s, "reference") + _span("sub-hyp", hyp_s, "substituted"))
    body = " ".join(parts) if parts else _span("eq", "<i>(empty)</i>")
    return f'{STYLE}<div class="dld-diff">{body}</div>{legend_html()}'
