"""A coloured word-level diff (reference vs hypothesis) as self-contained HTML."""
from __future__ import annotations

import html
from typing import Iterable, Optional

STYLE = """
<style>
.dld-diff {font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.95rem; line-height: 2.0;}
.dld-diff span {padding: 1px 4px; border-radius: 4px; margin-right: 2px;}
.dld-diff .eq {color: #0f172a;}
.dld-diff .sub-ref {background: #fee2e2; color: #991b1b; text-decoration: line-through;}
.dld-diff .sub-hyp {background: #fef3c7; color: #92400e;}
.dld-diff .del {background: #fee2e2; color: #991b1b; text-decoration: line-through;}
.dld-diff .ins {background: #dcfce7; color: #166534; text-decoration: underline;}
.dld-legend {font-size: 0.78rem; color: #475569; margin-top: 4px;}
.dld-legend span {padding: 0 4px; border-radius: 4px; margin-right: 8px;}
</style>
"""

# word_diff ops may be spelled in several ways (equal/match, sub/substitute/replace, del/delete, ins/insert).
_OPS = {"e": "eq", "m": "eq", "o": "eq", "c": "eq", "=": "eq",
        "s": "sub", "r": "sub", "d": "del", "i": "ins"}


def normalize_op(op: str) -> str:
    return _OPS.get(str(op).strip().lower()[:1], "sub")


def word_diff_html(ops: Iterable[tuple[str, Optional[str], Optional[str]]]) -> str:
    """ops: (op, ref_word, hyp_word) as returned by dld_core.metrics.word_diff."""
    parts = []
    for op, ref, hyp in ops:
        kind = normalize_op(op)
        ref_s, hyp_s = html.escape(ref or ""), html.escape(hyp or "")
        if kind == "eq":
            parts.append(f'<span class="eq">{ref_s or hyp_s}</span>')
        elif kind == "del":
            parts.append(f'<span class="del" title="deleted">{ref_s}</span>')
        elif kind == "ins":
            parts.append(f'<span class="ins" title="inserted">{hyp_s}</span>')
        else:
            parts.append(f'<span class="sub-ref" title="reference">{ref_s}</span>'
                         f'<span class="sub-hyp" title="substituted">{hyp_s}</span>')
    body = " ".join(parts) if parts else '<span class="eq"><i>(empty)</i></span>'
    legend = ('<div class="dld-legend"><span class="sub-ref">substituted</span><span class="sub-hyp">by</span>'
              '<span class="del">deleted</span><span class="ins">inserted</span></div>')
    return f'{STYLE}<div class="dld-diff">{body}</div>{legend}'
