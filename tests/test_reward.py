"""Task rewards and the dual-answer composition, one test per rule of method.md section 3."""

from __future__ import annotations

import pytest

from reward import score
from reward.scorer import RewardScorer
from rl.grammar import FALLBACK
from rl.problems import problem
from rl.problems.exact_match import exact_match_reward, normalize_answer
from rl.problems.grounded_qa import gqa_reward
from rl.problems.grounding import iou_reward, parse_interval
from rl.problems.math_answer import math_reward
from rl.types import RewardBreakdown


def response(a1: str, a2: str, think: str = "Looking again at the clip.") -> str:
    return f"\\boxed{{{a1}}}<think>{think}</think>\\boxed{{{a2}}}"


# -- composition: R = w1 R(a1) + w2 R(a2) + lambda_fmt R_fmt + alpha R_fallback


def test_total_is_the_weighted_sum_of_the_parts() -> None:
    assert score(response("B", "A"), "A", "exact_match") == RewardBreakdown(
        a1=0.0, a2=1.0, format=1.0, fallback=0.0, total=1.1 + 1.0
    )
    assert score(response("A", "B"), "A", "exact_match").total == pytest.approx(0.9 + 1.0)


def test_maximum_total_is_three() -> None:
    assert score(response("A", "A"), "A", "exact_match").total == pytest.approx(3.0)


def test_maximum_total_for_grounded_qa_is_five() -> None:
    gt = {"answer": "B", "segment": [2.0, 6.0]}
    result = score(response("B <> [2.0, 6.0]", "B <> [2.0, 6.0]"), gt, "gqa")
    assert (result.a1, result.a2, result.total) == (2.0, 2.0, pytest.approx(5.0))


def test_breakdown_reports_task_rewards_before_weights() -> None:
    result = score(response("[0, 5]", "[0, 10]"), [0, 10], "iou")
    assert (result.a1, result.a2, result.format, result.fallback) == (0.5, 1.0, 1.0, 0.0)
    assert result.total == pytest.approx(0.9 * 0.5 + 1.1 * 1.0 + 1.0)


def test_format_reward_is_zero_when_the_grammar_fails_even_if_answers_are_right() -> None:
    result = score("\\boxed{A}<think> </think>\\boxed{A}", "A", "exact_match")
    assert (result.a1, result.a2, result.format, result.total) == (1.0, 1.0, 0.0, pytest.approx(2.0))


def test_custom_weights_apply_to_each_part() -> None:
    result = score(response(FALLBACK, "A"), "A", "exact_match", w1=2.0, w2=3.0, lambda_fmt=0.5, alpha=0.25)
    assert result.total == pytest.approx(3.0 + 0.5 + 0.25)


def test_fallback_reward_needs_fallback_a1_and_a2_above_threshold() -> None:
    result = score(response(FALLBACK, "A"), "A", "exact_match")
    assert (result.a1, result.a2, result.format, result.fallback) == (0.0, 1.0, 1.0, 1.0)
    assert result.total == pytest.approx(1.1 + 1.0 + 0.3)


def test_fallback_reward_is_zero_when_a2_is_at_the_threshold() -> None:
    result = score(response(FALLBACK, "[0, 7]"), [0, 10], "iou")
    assert (result.a2, result.fallback) == (0.7, 0.0)
    assert score(response(FALLBACK, "[0, 7.5]"), [0, 10], "iou").fallback == 1.0


def test_fallback_reward_is_zero_when_a2_is_wrong() -> None:
    assert score(response(FALLBACK, "B"), "A", "exact_match").fallback == 0.0


def test_fallback_reward_is_zero_when_a1_is_a_real_answer() -> None:
    assert score(response("A", "A"), "A", "exact_match").fallback == 0.0


def test_fallback_threshold_is_configurable() -> None:
    assert score(response(FALLBACK, "[0, 7]"), [0, 10], "iou", fallback_threshold=0.6).fallback == 1.0


def test_fallback_a1_scores_zero_task_reward() -> None:
    assert score(response(FALLBACK, "7"), "7", "math").a1 == 0.0
    assert math_reward(FALLBACK, "7") == 0.0


def test_unknown_problem_type_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown problem_type 'ocr'; expected one of exact_match, math, iou, gqa"):
        score(response("A", "A"), "A", "ocr")
    with pytest.raises(ValueError, match="'ocr'"):
        problem("ocr")


def test_ground_truth_of_the_wrong_shape_raises() -> None:
    with pytest.raises(ValueError, match="iou ground truth"):
        score(response("[1, 2]", "[1, 2]"), "1 to 2", "iou")
    with pytest.raises(ValueError, match="gqa ground truth"):
        score(response("A", "A"), "A", "gqa")


# -- exact_match


def test_exact_match_is_case_and_whitespace_insensitive() -> None:
    assert exact_match_reward("  The   Red\nCAR ", "the red car") == 1.0
    assert exact_match_reward("the red cars", "the red car") == 0.0


def test_exact_match_applies_nfkc() -> None:
    assert normalize_answer("Ａ") == "a"
    assert exact_match_reward("ﬁve", "five") == 1.0


@pytest.mark.parametrize("pred", ["(A)", "[A]", "{A}", " a "])
def test_exact_match_bracketed_letter_maps_to_the_letter(pred: str) -> None:
    assert normalize_answer(pred) == "a"
    assert exact_match_reward(pred, "A") == 1.0


@pytest.mark.parametrize("pred", ["A)", "A/", "A:", "A;", "A-"])
def test_exact_match_letter_followed_by_listed_punctuation_maps_to_the_letter(pred: str) -> None:
    assert normalize_answer(pred) == "a"
    assert exact_match_reward(pred, "(A)") == 1.0


@pytest.mark.parametrize("pred", ["A.", "A. a red car", "A) a red car", "(A", "AB"])
def test_exact_match_letter_followed_by_period_is_not_letter(pred: str) -> None:
    assert normalize_answer(pred) != "a"
    assert exact_match_reward(pred, "A") == 0.0


@pytest.mark.parametrize("pred", ["yes", "Y.", "true", "T!", "ok", "Okay", "Yes.", "(yes)", "'YES'!", "ｙｅｓ"])
def test_exact_match_yes_synonyms_map_to_yes(pred: str) -> None:
    assert normalize_answer(pred) == "yes"
    assert exact_match_reward(pred, "Yes") == 1.0


@pytest.mark.parametrize("pred", ["no", "N.", "false", "F!", "No!", "\"no\""])
def test_exact_match_no_synonyms_map_to_no(pred: str) -> None:
    assert normalize_answer(pred) == "no"
    assert exact_match_reward(pred, "no") == 1.0


def test_exact_match_yes_no_synonyms_must_be_the_whole_string() -> None:
    assert normalize_answer("yes, he does") == "yes, he does"
    assert exact_match_reward("yes, he does", "yes") == 0.0


@pytest.mark.parametrize("letter", ["y", "Y", "t", "T", "n", "N", "f", "F", "(n)", "f)"])
def test_exact_match_lone_synonym_letters_are_choice_letters(letter: str) -> None:
    """The single-letter rule comes before the yes/no synonyms (official order)."""
    assert normalize_answer(letter) == letter.strip("()").lower()


def test_exact_match_no_does_not_score_against_option_f() -> None:
    assert exact_match_reward("no", "F") == 0.0
    assert exact_match_reward("yes", "Y") == 0.0
    assert exact_match_reward("N", "no") == 0.0
    assert exact_match_reward("F", "F") == 1.0


def test_exact_match_option_letters_that_are_synonyms_still_match_each_other() -> None:
    assert exact_match_reward("(F)", "F") == 1.0
    assert exact_match_reward("T:", "T") == 1.0


def test_exact_match_blank_prediction_scores_zero() -> None:
    assert exact_match_reward("", "") == 0.0
    assert exact_match_reward("  ", "A") == 0.0


# -- math


def test_math_parses_bare_latex_sqrt() -> None:
    assert math_reward("\\sqrt{2}", "\\sqrt{2}") == 1.0


def test_math_parses_nested_latex_in_ground_truth_and_prediction() -> None:
    assert math_reward("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}") == 1.0
    assert math_reward("\\frac{\\sqrt{2}}{4}", "\\frac{\\sqrt{\\frac{1}{2}}}{2}") == 1.0


def test_math_bare_latex_matches_plain_numbers_in_both_directions() -> None:
    assert math_reward("\\frac{1}{2}", "0.5") == 1.0
    assert math_reward("0.5", "\\frac{1}{2}") == 1.0


def test_math_bare_latex_is_not_read_as_its_leading_number_in_both_directions() -> None:
    """The public code read bare `2\\pi` as 2, so a wrong 2 scored 1 (and `(1, 2)` as 2)."""
    assert math_reward("2", "2\\pi") == 0.0
    assert math_reward("2\\pi", "2") == 0.0
    assert math_reward("2", "(1, 2)") == 0.0


def test_math_accepts_dollar_delimited_answers() -> None:
    assert math_reward("$\\frac12$", "1/2") == 1.0


def test_math_wrong_or_empty_answer_scores_zero() -> None:
    assert math_reward("4", "3") == 0.0
    assert math_reward("", "3") == 0.0


def test_math_stalling_input_scores_zero_within_the_per_sample_limit() -> None:
    scorer = RewardScorer(timeout_s=1.0)
    result = scorer.score_one(response("9^{9^{9^{9}}}", "9^{9^{9^{9}}}"), "2", "math")
    assert result == RewardBreakdown(a1=0.0, a2=0.0, format=0.0, fallback=0.0, total=0.0, timed_out=True)
    assert scorer.timeouts == 1
    assert scorer.score_one(response("1", "\\frac{2}{2}"), "1", "math").total == pytest.approx(3.0)


# -- iou


@pytest.mark.parametrize(
    ("pred", "interval"),
    [
        ("[1.5, 3.0]", (1.5, 3.0)),
        ("(1.5, 3.0)", (1.5, 3.0)),
        ("1.5, 3", (1.5, 3.0)),
        ("1.5-3", (1.5, 3.0)),
        ("1.5 – 3", (1.5, 3.0)),
        ("1.5—3", (1.5, 3.0)),
        ("from 1.5 to 3.0 seconds", (1.5, 3.0)),
        ("between 1.5 and 3", (1.5, 3.0)),
    ],
)
def test_iou_parses_each_interval_form(pred: str, interval: tuple[float, float]) -> None:
    assert parse_interval(pred) == interval


def test_iou_takes_the_first_interval() -> None:
    assert parse_interval("[4, 6] or maybe [0, 2]") == (4.0, 6.0)
    assert iou_reward("[4, 6] or maybe [0, 2]", [0, 2]) == 0.0


def test_iou_swaps_a_reversed_interval() -> None:
    assert iou_reward("[10, 0]", [0, 10]) == 1.0


def test_iou_point_interval_scores_zero() -> None:
    assert iou_reward("[5, 5]", [0, 10]) == 0.0


def test_iou_no_interval_scores_zero() -> None:
    assert iou_reward("around 5 seconds", [0, 10]) == 0.0


def test_iou_is_overlap_over_union() -> None:
    assert iou_reward("[2, 6]", [4, 10]) == pytest.approx(2 / 8)
    assert iou_reward("[0, 2]", [3, 4]) == 0.0


def test_iou_takes_max_over_segments() -> None:
    assert iou_reward("[3, 5]", [[0, 1], [3, 6], [4, 5]]) == pytest.approx(2 / 3)


def test_iou_accepts_a_single_segment_or_a_list_of_segments() -> None:
    assert iou_reward("[0, 5]", [0, 10]) == iou_reward("[0, 5]", [[0, 10]]) == 0.5


# -- gqa


def test_gqa_adds_exact_match_of_first_part_and_iou_of_last_part() -> None:
    gt = {"answer": "C", "segment": [0.0, 10.0]}
    assert gqa_reward("(C) <> [0, 5]", gt) == 1.5
    assert gqa_reward("B <> [0, 10]", gt) == 1.0
    assert gqa_reward("C <> x <> [0, 10]", gt) == 2.0


def test_gqa_without_separator_uses_the_whole_prediction_for_both_parts() -> None:
    gt = {"answer": "C", "segment": [0.0, 10.0]}
    assert gqa_reward("C", gt) == 1.0
    assert gqa_reward("[0, 10]", gt) == 1.0


def test_a_bare_box_scores_both_answers_without_format() -> None:
    result = score("\\boxed{B}", "B", "exact_match")
    assert (result.a1, result.a2, result.format, result.total) == (1.0, 1.0, 0.0, pytest.approx(2.0))
