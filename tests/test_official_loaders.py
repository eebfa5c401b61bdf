"""Training records typed and worded as the VideoAuto-R1 release loader (`videoauto_r1/utils/data_rl.py`) does.

ViRL: the problem type is math when math-verify reads what the release extracts from the answer
(its last one-level box, else the whole answer); MMR-VBench: `{question}\\nOptions:\\n` then the
options as `X. text`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.data.sources import SOURCES, Item, Source
from rl.render import user_text


def _ctx(name: str, tmp_path: Path) -> Item:
    return Item(source=Source(name=name, anno_path=tmp_path / "a.json", data_path=tmp_path), id=f"{name}/0",
                where=f"{name}[0]")


@pytest.mark.parametrize("answer, expected_type, expected_answer", [
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "math", "\\frac{\\sqrt{3}}{2}"),  # too deep for the release's box: parsed whole
    ("The slope is \\boxed{\\frac{1}{2}}.", "math", "\\frac{1}{2}"),
    ("\\boxed{12}", "math", "12"),
    ("\\boxed{Cartoonish}", "exact_match", "Cartoonish"),
    ("\\boxed{A}", "exact_match", "A"),
])
def test_virl_problem_type_is_the_release_loaders(answer, expected_type, expected_answer, tmp_path):
    sample = SOURCES["VIRL"]({"question": "<image>What is it?", "answer": answer, "image": ["x.png"]},
                             _ctx("VIRL", tmp_path))
    assert (sample.problem_type, sample.answer) == (expected_type, expected_answer)


def test_mmr_vbench_user_text_is_the_release_loaders(tmp_path):
    item = {"video": "m.mp4", "question": "Where is the key hidden?", "options": ["(A) table", "(B) floor", "(C) shelf", ""],
            "correctAnswer": "(C)"}
    sample = SOURCES["MMR-VBench"](item, _ctx("MMR-VBench", tmp_path))
    release = item["question"] + "\nOptions:\n" + "\n".join(op[1] + "." + op[3:] for op in item["options"] if op != "")
    assert user_text(sample) == release + "\nPut your final answer in \\boxed{}."
    assert sample.answer == "C" and sample.options == ["table", "floor", "shelf"]
