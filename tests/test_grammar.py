"""The response grammar, one test per rule of method.md section 1."""

from __future__ import annotations

import pytest

from rl.grammar import FALLBACK, a1_span, box_spans, is_fallback, last_boxed, parse_response

GOOD = "\\boxed{A}<think>The man opens the door.</think>\\boxed{B}"


def test_format_accepts_the_canonical_response() -> None:
    parsed = parse_response(GOOD)
    assert (parsed.a1, parsed.think, parsed.a2, parsed.format_ok) == ("A", "The man opens the door.", "B", True)


def test_format_allows_whitespace_between_parts_and_at_both_ends() -> None:
    parsed = parse_response(" \n\\boxed{A}\n <think>\nr\n</think>\t\\boxed{B} \n")
    assert (parsed.a1, parsed.think, parsed.a2, parsed.format_ok) == ("A", "\nr\n", "B", True)


@pytest.mark.parametrize(
    "response",
    [
        "Answer: \\boxed{A}<think>r</think>\\boxed{B}",
        "\\boxed{A} so <think>r</think>\\boxed{B}",
        "\\boxed{A}<think>r</think> final \\boxed{B}",
        "\\boxed{A}<think>r</think>\\boxed{B}.",
    ],
)
def test_format_rejects_any_text_outside_the_parts(response: str) -> None:
    parsed = parse_response(response)
    assert parsed.format_ok is False
    assert (parsed.a1, parsed.a2) == ("A", "B")


def test_format_rejects_a_missing_think_open_tag() -> None:
    parsed = parse_response("\\boxed{A}r</think>\\boxed{B}")
    assert parsed.format_ok is False
    assert (parsed.a1, parsed.a2) == ("", "B")


def test_format_rejects_a_missing_think_close_tag() -> None:
    parsed = parse_response("\\boxed{A}<think>r\\boxed{B}")
    assert parsed.format_ok is False
    assert (parsed.a1, parsed.a2) == ("A", "")


def test_format_rejects_two_think_blocks() -> None:
    parsed = parse_response("\\boxed{A}<think>r</think><think>s</think>\\boxed{B}")
    assert parsed.format_ok is False
    assert (parsed.a1, parsed.a2) == ("A", "B")


def test_format_rejects_think_tags_out_of_order() -> None:
    parsed = parse_response("\\boxed{A}</think>r<think>\\boxed{B}")
    assert parsed.format_ok is False


def test_format_rejects_blank_think() -> None:
    assert parse_response("\\boxed{A}<think></think>\\boxed{B}").format_ok is False
    assert parse_response("\\boxed{A}<think> \n\t </think>\\boxed{B}").format_ok is False
    assert parse_response("\\boxed{A}<think>.</think>\\boxed{B}").format_ok is True


def test_a1_is_the_single_box_before_think() -> None:
    assert parse_response("\\boxed{12.5}<think>r</think>\\boxed{13}").a1 == "12.5"


def test_a2_is_the_single_box_after_the_last_close_think() -> None:
    parsed = parse_response("\\boxed{A}<think>r</think>x</think>\\boxed{C}")
    assert parsed.a2 == "C"
    assert parsed.format_ok is False


def test_segment_with_two_boxes_gives_empty_answer() -> None:
    parsed = parse_response("\\boxed{A}\\boxed{B}<think>r</think>\\boxed{C} \\boxed{D}")
    assert (parsed.a1, parsed.a2, parsed.format_ok, parsed.a1_span) == ("", "", False, None)


def test_segment_with_no_box_gives_empty_answer() -> None:
    parsed = parse_response("A<think>r</think>B")
    assert (parsed.a1, parsed.a2, parsed.format_ok) == ("", "", False)


def test_boxes_inside_think_are_allowed() -> None:
    parsed = parse_response("\\boxed{A}<think>maybe \\boxed{C}, no: \\boxed{B}</think>\\boxed{B}")
    assert (parsed.a1, parsed.a2, parsed.format_ok) == ("A", "B", True)


@pytest.mark.parametrize(
    "content",
    ["\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{\\frac{1}{2}}}{2}", "{{{{x}}}}", "\\left\\{ 1, 2 \\right\\}", "a \\\\{b}"],
)
def test_box_contents_nest_braces_to_any_depth(content: str) -> None:
    parsed = parse_response(f"\\boxed{{{content}}}<think>r</think>\\boxed{{{content}}}")
    assert (parsed.a1, parsed.a2, parsed.format_ok) == (content, content, True)


def test_box_scanner_treats_escaped_braces_as_literal() -> None:
    text = "\\boxed{\\{1, 2\\}}"
    assert box_spans(text) == ([(7, len(text) - 1)], False)
    assert box_spans("\\boxed{\\}") == ([], True)


def test_unclosed_box_gives_empty_answer() -> None:
    parsed = parse_response("\\boxed{\\frac{1}{2}<think>r</think>\\boxed{B")
    assert (parsed.a1, parsed.a2, parsed.format_ok) == ("", "", False)


def test_fallback_constant_is_the_trained_string() -> None:
    assert FALLBACK == "Let's analyze the problem step by step."
    assert parse_response(f"\\boxed{{{FALLBACK}}}<think>r</think>\\boxed{{A}}").is_fallback is True


@pytest.mark.parametrize("a1", ["LET'S ANALYZE IT", "  let's   analyze", "Let's analyze the video step by step"])
def test_fallback_is_detected_by_its_normalised_prefix(a1: str) -> None:
    assert is_fallback(a1) is True


@pytest.mark.parametrize("a1", ["Let us analyze the problem", "A", "", "I think let's analyze"])
def test_fallback_is_not_detected_for_other_answers(a1: str) -> None:
    assert is_fallback(a1) is False


def test_a1_span_points_at_a1_content() -> None:
    text = "  \\boxed{\\frac{1}{2}}<think>\\boxed{x}</think>\\boxed{y}"
    span = parse_response(text).a1_span
    assert span == (9, 20)
    assert text[span[0] : span[1]] == "\\frac{1}{2}"
    assert a1_span(text) == span


def test_a1_span_without_think_covers_the_stage_one_text() -> None:
    assert a1_span("\\boxed{C}") == (7, 8)
    assert a1_span("\\boxed{C}<think>") == (7, 8)
    assert a1_span("\\boxed{C") is None


def test_without_a_close_think_a2_is_the_single_box_of_the_whole_text() -> None:
    """As officially: a bare box is both answers, with format 0."""
    parsed = parse_response("\\boxed{A}")
    assert (parsed.a1, parsed.a2, parsed.format_ok) == ("A", "A", False)
    parsed = parse_response("I think it is \\boxed{12}.")
    assert (parsed.a1, parsed.a2, parsed.format_ok) == ("12", "12", False)
    assert parse_response("\\boxed{A}<think>r\\boxed{B}").a2 == ""  # two boxes in the whole text
    assert parse_response("<think>r \\boxed{B}").a2 == "B"


def test_last_boxed_returns_the_last_complete_box_anywhere() -> None:
    assert last_boxed("x \\boxed{1} y <think>\\boxed{2}</think> \\boxed{\\frac{\\pi}{2}} \\boxed{3") == "\\frac{\\pi}{2}"
    assert last_boxed("no box here") is None


def test_box_inside_an_unclosed_box_counts_but_the_segment_has_no_answer() -> None:
    assert box_spans("\\boxed{ \\boxed{A}") == ([(15, 16)], True)
    assert last_boxed("\\boxed{ \\boxed{A}") == "A"
    assert parse_response("\\boxed{ \\boxed{A}<think>r</think>\\boxed{A}").a1 == ""
    assert box_spans("\\boxed{" * 5000) == ([], True)
