"""The response grammar `\\boxed{a1}<think>r</think>\\boxed{a2}` (method.md section 1).

One parser serves the reward (a1, a2, format, fallback), inference (the last box is the final
answer) and early exit (the character span of a1's content, mapped to tokens by offsets).

Box contents may nest braces to any depth: a small scanner matches balanced braces and skips
LaTeX escapes (`\\{`, `\\}`, `\\\\`), so `\\boxed{\\frac{\\sqrt{2}}{2}}` and `\\boxed{\\{1, 2\\}}` are
one box each. The public code allowed one level of nesting only, which silently zeroed deeper
LaTeX.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Optional

FALLBACK = "Let's analyze the problem step by step."
"""The a1 a model is told to give when it cannot answer without reasoning."""
FALLBACK_PREFIX = "let's analyze"
"""A normalised a1 starting with this is the fallback."""
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOX_OPEN = "\\boxed{"

Span = tuple[int, int]


@dataclass(frozen=True)
class ParsedResponse:
    """A response split per the grammar.

    `a1` is the content of the single box before the first `<think>` (the whole text when there
    is no `<think>`, as at inference when decoding stopped early); `a2` is the content of the single
    box after the last `</think>`, or of the whole text when there is no `</think>` (as officially:
    a bare `\\boxed{A}` gives a1 = a2 = A, format 0). A segment with zero or several boxes gives "". `a1_span` is (start, end) of a1's content in the text, so that
    `text[start:end] == a1`; None when there is no a1 box. `format_ok` is the whole grammar.
    """

    a1: str
    think: str
    a2: str
    format_ok: bool
    is_fallback: bool
    a1_span: Optional[Span]


def normalize_text(text: str) -> str:
    """NFKC, lower-case, whitespace runs collapsed to one space and stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def is_fallback(a1: str) -> bool:
    """a1 is the fallback answer: its normalised form starts with "let's analyze"."""
    return normalize_text(a1).startswith(FALLBACK_PREFIX)


_TOKEN = re.compile(r"\\boxed\{|\\.|[{}]", re.DOTALL)
"""What the brace scanner looks at: a box opening, an escape pair (`\\{`, `\\}`, `\\\\`, `\\frac`...), a brace."""


def box_spans(text: str, start: int = 0, end: Optional[int] = None) -> tuple[list[Span], bool]:
    """Content spans of the top-level `\\boxed{...}` in text[start:end], and whether a box is unclosed.

    One pass over the braces with a stack of open groups, linear in the text. A box inside another
    closed box is part of its content; a box that never closes is skipped (boxes inside it count).
    """
    open_groups: list[int] = []  # content start of each open box, -1 for a plain group
    closed: list[Span] = []
    for token in _TOKEN.finditer(text, start, len(text) if end is None else end):
        kind = token.group()
        if kind == BOX_OPEN:
            open_groups.append(token.end())
        elif kind == "{":
            open_groups.append(-1)
        elif kind == "}" and open_groups:
            content_start = open_groups.pop()
            if content_start >= 0:
                closed.append((content_start, token.start()))
    top: list[Span] = []
    for span in sorted(closed):
        if not top or span[0] > top[-1][1]:
            top.append(span)
    return top, any(content_start >= 0 for content_start in open_groups)


def _single_box(text: str, start: int, end: int) -> Optional[Span]:
    """The content span of the one box in text[start:end]; None for zero, several, or an unclosed one."""
    spans, unclosed = box_spans(text, start, end)
    if len(spans) != 1 or unclosed:
        return None
    return spans[0]


def _only_box(text: str, start: int, end: int, span: Optional[Span]) -> bool:
    """text[start:end] is whitespace, the box with content `span`, whitespace."""
    if span is None:
        return False
    box_start = span[0] - len(BOX_OPEN)
    return not text[start:box_start].strip() and not text[span[1] + 1 : end].strip()


def last_boxed(text: str) -> Optional[str]:
    """Content of the last complete box anywhere in the text (the final answer at inference)."""
    spans, _ = box_spans(text)
    if not spans:
        return None
    start, end = spans[-1]
    return text[start:end]


def a1_span(text: str) -> Optional[Span]:
    """(start, end) of a1's content: the single box before the first `<think>` (or the whole text)."""
    open_at = text.find(THINK_OPEN)
    return _single_box(text, 0, open_at if open_at >= 0 else len(text))


def parse_response(text: str) -> ParsedResponse:
    """Split a response into a1, think and a2, and check the grammar of method.md section 1.

    format_ok: exactly one `<think>` and one `</think>`, in that order; a non-blank think block;
    before `<think>` and after `</think>` nothing but whitespace around exactly one box each.
    """
    open_at = text.find(THINK_OPEN)
    close_at = text.rfind(THINK_CLOSE)
    a1_end = open_at if open_at >= 0 else len(text)
    span1 = _single_box(text, 0, a1_end)
    a2_start = close_at + len(THINK_CLOSE) if close_at >= 0 else 0
    span2 = _single_box(text, a2_start, len(text))
    think_start = open_at + len(THINK_OPEN)
    think = text[think_start:close_at] if 0 <= open_at and think_start <= close_at else ""
    format_ok = (
        text.count(THINK_OPEN) == 1
        and text.count(THINK_CLOSE) == 1
        and think_start <= close_at
        and bool(think.strip())
        and _only_box(text, 0, a1_end, span1)
        and _only_box(text, a2_start, len(text), span2)
    )
    a1 = text[span1[0] : span1[1]] if span1 else ""
    a2 = text[span2[0] : span2[1]] if span2 else ""
    return ParsedResponse(
        a1=a1,
        think=think,
        a2=a2,
        format_ok=format_ok,
        is_fallback=is_fallback(a1),
        a1_span=span1,
    )
