"""Record what the official VideoAuto-R1 evaluation gives for tests/data/paper_eval.json.

The responses below stress the scoring rules (the answer-twice format, plain letters, answer
prefixes, nested boxes, intervals written many ways, NExT-GQA `letter <> interval` forms). Each is
scored twice, as if a1 was answered (`on_a1`) and as if the model thought, through the official
functions: the autothink wrapper's choice of text (`ans.split("<think>")[0]` when a1's confidence
reaches tau, else `ans.split("</think>")[-1]`; lmms-eval strips it), then the `*_boxed` task's
`process_results` and its aggregations; MVBench's group figure as lmms-eval's
`aggregate_subtask_metrics` weights it (by task size).

The official code is imported from a snapshot, never vendored. Make one with

    git --git-dir=<mirror of IVUL-KAUST/VideoAuto-R1> archive HEAD lmms_eval/tasks/_task_utils \\
        lmms_eval/tasks/videomme lmms_eval/tasks/mvbench lmms_eval/tasks/charades_sta \\
        lmms_eval/tasks/activitynet_tvg lmms_eval/tasks/nextgqa | tar x -C /tmp/vauto

(and lmms_eval/models/simple/early_exit.py for the confidence rule), then
`PYTHONPATH=. python scripts/paper_eval_expected.py --official /tmp/vauto --commit <sha>` (needs
loguru, pyyaml, opencv and torch, which the project environment has). The tests need only the JSON.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "paper_eval.json"

LETTER_RESPONSES = [
    "\\boxed{B}<think>The man picks A first, then the dog; so it is C.</think>\\boxed{C}",
    "B",
    "The best answer is C.",
    "\\boxed{\\boxed{D}}",
    "Because the dog runs away, \\boxed{A}",
    "Because the dog runs away, the answer is A",
    "\\boxed{(A) a red car}<think>red car, yes</think>\\boxed{(A) a red car}",
    "\\boxed{Let's analyze the problem step by step.}<think>count: three, so C</think>\\boxed{C}",
    "\\boxed{A}<think>A seems right but maybe D</think>",
    "\\boxed{A}<think>the thought is cut off before it closes, maybe B",
    "The best option is D",
    "Answer: \\boxed{\\text{B}}",
    "\\boxed{E}<think>none fits</think>\\boxed{E}",
    "\\boxed{}<think>hmm</think>\\boxed{}",
    "the person in the video walks to the kitchen and then sits down on the old sofa",
    "\\boxed{d}<think>lower case</think>\\boxed{d}",
    "\\boxed{\\frac{\\sqrt{3}}{2}}<think>a value, not a letter; pick C</think>\\boxed{C}",
    "\\boxed{Best answer:Best option: B}",
    "  \\boxed{ C }  <think> C again </think>  \\boxed{ C }  ",
    "\\boxed{B}<think>Option C is wrong, A is wrong.</think>The final answer: \\boxed{D}",
    "<think>I would say A</think>\\boxed{A}",
    "\\boxed{C}\n<think>\nDuring the clip B happens.\n</think>\nDefinitely B.",
    "\\boxed{A}<think>x</think>\\boxed{B}<think>y</think>\\boxed{C}",
]

GROUNDING_RESPONSES = [
    "\\boxed{[12.5, 20.3]}<think>maybe it is 10 to 15</think>\\boxed{[10.0, 15.0]}",
    "\\boxed{\\boxed{12.5-20.3}}",
    "0:10 - 0:18",
    "00:00:06 - 00:00:10",
    "15s - 26.3s",
    "Start time: 107.2s, End time: 157.2s",
    '{"start_time": 2, "end_time": 6}',
    "The event starts at 3.0 and ends at 8.5",
    "\\boxed{[8.5, 3.2]}",
    "It happens from 4 to 9 seconds.",
    "\\boxed{between 2.5 and 7}",
    "\\boxed{(1.1, 1.65)}",
    "\\boxed{[0, 5]}",
    "no idea",
    "\\boxed{[3.3, 3.3]}",
    "\\boxed{12.5 – 20.3}",
    "\\boxed{[-2.0, 5.0]}",
    "\\boxed{[0.1, 0.7]}<think>check 0.2, 0.3 as well</think>\\boxed{[0.2, 0.3]}",
    "\\boxed{Let's analyze the problem step by step.}<think>From 30.0 to 40.0 perhaps</think>\\boxed{[30.0, 40.0]}",
    "\\boxed{[24.0, 31.5]}<think>the segment [24.0, 31.5] holds it</think>",
    "\\boxed{[1.0,2.0]} and \\boxed{[2.5, 9.75]}",
    "\\boxed{[7.3, 12.9]}",
    "\\boxed{[ 4.4 ,  9.9 ]}",
]

GQA_RESPONSES = [
    "\\boxed{A <> [20.3, 30.8]}<think>maybe B in 10 to 12</think>\\boxed{B <> [10.0, 12.0]}",
    "\\boxed{B<>20.3-30.8}",
    "\\boxed{C}",
    "\\boxed{A <> 0:20 - 0:30}",
    "\\boxed{Because <> [1, 2]}",
    "\\boxed{E <> (5, 10)}",
    "The answer is D <> [3.0, 7.5]",
    "\\boxed{A <> [5.0, 5.0]}",
    "\\boxed{[3.0, 7.5] <> A}",
    "\\boxed{(B) the red ball <> [2.0, 6.0]}",
    "\\boxed{Let's analyze the problem step by step.}<think>A, from 4 to 8</think>\\boxed{A <> [4.0, 8.0]}",
    "\\boxed{C <> [12.0, 15.5]}",
    "\\boxed{D <> 6.5 to 9.0}",
    "\\boxed{B <> [0.0, 3.0] <> [4.0, 5.0]}",
    "\\boxed{A <> [\\text{2.0}, 6.0]}",
    "\\boxed{A}<think>and the clip [2.0, 6.0]</think>\\boxed{A <> [2.0, 6.0]}",
    "A <> [1.0, 9.0]",
    "\\boxed{The best answer is B <> [2.2, 4.4]}",
    "\\boxed{d <> [2.0, 6.0]}",
    "\\boxed{E<>[0.5,1.5]}",
    "\\boxed{B <> [7.0, 3.0]}",
    "\\boxed{C <> 3.0, 8.0}",
]

MVBENCH_RESPONSES = [
    "\\boxed{A. the man}<think>the man opens it</think>\\boxed{B. the woman}",
    "(B) walking",
    "it is a cat",
    "\\boxed{b}",
    "\\boxed{}<think>unsure</think>\\boxed{}",
    "<think>I cannot tell</think>",
    "I think the answer is C.",
    "Walking.",
    "\\boxed{E}",
    "D) falls down",
    "Option (C)",
    "\\boxed{(A)}<think>A again</think>\\boxed{(A)}",
    "\\boxed{Let's analyze the problem step by step.}<think>so D</think>\\boxed{D}",
    "\\boxed{\\boxed{C}}",
    "\\boxed{C}<think>It's B. Really.</think>",
    "\\boxed{the answer: e}",
    "\\boxed{1,2,3}",
    "x. y. z. " * 20 + "\\boxed{..........................................b}",
    "\\boxed{A}\n<think>\nno\n</think>\n\\boxed{\"B\"}",
    "\\boxed{B. Because}",
    "\\boxed{a. the cup}",
    "\\boxed{F}",
]

VIDEOMME_DOC = {"videoID": "v{i}", "question_id": "q{i}", "duration": "short", "domain": "Knowledge",
                "sub_category": "Humanity & History", "task_type": "Counting Problem", "question": "What happens?",
                "options": ["A. red", "B. blue", "C. green", "D. yellow"], "answer": "B", "url": "", "video_id": "{i}"}
DURATIONS = ("short", "medium", "long")
TASK_TYPES = ("Counting Problem", "Action Reasoning", "OCR Problems")
MVBENCH_TASKS = {"action_count": 20, "object_shuffle": 14, "moving_direction": 10}


def _load(official: Path):
    sys.path.insert(0, str(official))
    logging.disable(logging.CRITICAL)
    mods = {name: importlib.import_module(f"lmms_eval.tasks.{name}.utils")
            for name in ("videomme", "mvbench", "charades_sta", "activitynet_tvg", "nextgqa")}
    from loguru import logger

    logger.remove()
    return mods


def chosen_text(response: str, on_a1: bool) -> str:
    """The autothink wrapper's text (qwen2_5_vl_autothink.py) as lmms-eval hands it on (stripped)."""
    return (response.split("<think>")[0] if on_a1 else response.split("</think>")[-1]).strip()


def _items(responses):
    return [(r, on_a1) for r in responses for on_a1 in (True, False)]


def videomme(mod) -> dict:
    items, results = [], []
    for i, (response, on_a1) in enumerate(_items(LETTER_RESPONSES)):
        doc = {k: (v.format(i=i) if isinstance(v, str) else v) for k, v in VIDEOMME_DOC.items()}
        doc["duration"] = DURATIONS[i % 3]
        doc["task_type"] = TASK_TYPES[i % 3]
        doc["answer"] = "ABCD"[(i // 2) % 4]
        out = mod.videomme_process_boxed_results(doc, [chosen_text(response, on_a1)])["videomme_perception_score"]
        results.append(out)
        items.append({"doc": doc, "response": response, "on_a1": on_a1,
                      "expected": {"pred": out["pred_answer"], "correct": out["pred_answer"] == out["answer"]}})
    per_duration = {d: mod.videomme_aggregate_results([r for r in results if r["duration"] == d]) for d in DURATIONS}
    return {"items": items, "aggregates": {"accuracy": mod.videomme_aggregate_results(results),
                                           **{f"per_duration/{d}": v for d, v in per_duration.items()}}}


def mvbench(mod) -> dict:
    pairs = _items(MVBENCH_RESPONSES)
    items, per_task_results = [], {}
    k = 0
    for task, size in MVBENCH_TASKS.items():
        for j in range(size):
            response, on_a1 = pairs[k % len(pairs)]
            k += 1
            candidates = ["the man", "the woman", "the dog", "the cat", "nobody"][: 4 + (j % 2)]
            doc = {"video": f"{task}_{j}.mp4", "question": f"Who acts ({task} {j})?", "candidates": candidates,
                   "answer": candidates[j % len(candidates)]}
            out = mod.mvbench_process_boxed_results(doc, [chosen_text(response, on_a1)])["mvbench_accuracy"]
            per_task_results.setdefault(task, []).append(out)
            items.append({"task": task, "doc": doc, "response": response, "on_a1": on_a1,
                          "expected": {"correct": bool(out["score"]), "answered": out["pred_answer"] != ""}})
    per_task = {t: mod.mvbench_aggregate_results(v) for t, v in per_task_results.items()}
    sizes = [len(v) for v in per_task_results.values()]  # lmms-eval: the task's sample count
    metrics = list(per_task.values())
    weighted = sum(m * s for m, s in zip(metrics, sizes)) / sum(sizes)  # aggregate_subtask_metrics, weight_by_size
    return {"items": items, "aggregates": {"accuracy": weighted, **{f"per_task/{t}": v for t, v in per_task.items()}}}


def grounding(mod, prefix: str, gts) -> dict:
    items, results = [], []
    for i, (response, on_a1) in enumerate(_items(GROUNDING_RESPONSES)):
        doc = {"video": f"vid{i}.mp4", "caption": f"someone does thing {i}", "timestamp": gts[i % len(gts)]}
        out = mod.temporal_grounding_process_boxed_results_generation(doc, [chosen_text(response, on_a1)])["m_iou"]
        results.append(out)
        items.append({"doc": doc, "response": response, "on_a1": on_a1, "expected": {"iou": out["iou"]}})
    agg = {f"r@{m}": getattr(mod, f"temporal_grounding_aggregate_{prefix}_iou_0{int(m * 10)}")(results, None)
           for m in (0.3, 0.5, 0.7)}
    agg["miou"] = getattr(mod, f"temporal_grounding_aggregate_{prefix}_m_iou")(results, None)
    return {"items": items, "aggregates": agg}


def nextgqa(mod) -> dict:
    items, results = [], []
    solutions = ([[2.0, 6.0]], [[20.0, 31.0], [3.0, 8.0]], [[10.0, 12.0]], [[4.0, 8.0], [0.0, 1.0]])
    for i, (response, on_a1) in enumerate(_items(GQA_RESPONSES)):
        candidates = ["red ball", "blue ball", "cat", "dog", "nothing"]
        doc = {"video": f"g{i}.mp4", "qid": i, "question": "What moves?", "candidates": candidates,
               "answer": candidates[(i // 2) % 5], "solution": solutions[i % len(solutions)]}
        out = mod.gqa_process_boxed_results_generation(doc, [chosen_text(response, on_a1)])["accuracy"]
        results.append(out)
        items.append({"doc": doc, "response": response, "on_a1": on_a1,
                      "expected": {"correct": bool(out["score"]), "iou": out["iou"]}})
    agg = {"accuracy": mod.multi_choice_aggregate_nextgqa_accuracy(results, None)}
    agg.update({f"r@{m}": getattr(mod, f"temporal_grounding_aggregate_nextgqa_iou_0{int(m * 10)}")(results, None)
                for m in (0.3, 0.5, 0.7)})
    agg["miou"] = mod.temporal_grounding_aggregate_nextgqa_m_iou(results, None)
    return {"items": items, "aggregates": agg}


def confidence(official: Path) -> dict:
    """The wrapper's a1 confidence (`compute_first_boxed_answer_probs`) on every response above, with
    the project's locally trained tiny tokenizer and a fixed made-up log-probability per token."""
    import math

    import torch

    from rl.tiny import build_tokenizer

    spec = importlib.util.spec_from_file_location("official_early_exit", official / "lmms_eval/models/simple/early_exit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tok = build_tokenizer()
    vocab = len(tok)
    extra = ["\\boxed{(B) walking}<think>x</think>\\boxed{B}", "\\boxed{ b }<think>y</think>\\boxed{b}",
             "\\boxed{[12.5, 20.3]}\\boxed{[1.0, 2.0]}", "\\boxed{A}", "\\boxed{C. the cat}<think></think>\\boxed{C}"]
    items = []
    for text in dict.fromkeys(LETTER_RESPONSES + GROUNDING_RESPONSES + GQA_RESPONSES + MVBENCH_RESPONSES + extra):
        ids = tok.encode(text, add_special_tokens=False)
        probs = [0.9 + 0.0999 * ((7 * k) % 11) / 10 for k in range(len(ids))]
        scores = []
        for token, p in zip(ids, probs):
            row = torch.full((1, vocab), math.log((1 - p) / (vocab - 1)), dtype=torch.float64)
            row[0, token] = math.log(p)
            scores.append(row)
        gen_out = type("GenOut", (), {"scores": scores})()
        conf = mod.compute_first_boxed_answer_probs(0, torch.tensor(ids), gen_out, text, "videomme_boxed", tok)
        items.append({"text": text, "token_ids": ids, "logprobs": [math.log(p) for p in probs], "expected": conf})
    return {"items": items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="folder holding the snapshot's lmms_eval/tasks")
    parser.add_argument("--commit", required=True, help="the snapshot's commit, recorded in the JSON")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    mods = _load(Path(args.official))
    data = {
        "source": f"IVUL-KAUST/VideoAuto-R1@{args.commit} (lmms_eval/tasks/*/utils.py, *_boxed)",
        "figures": "aggregates in percent, as the official functions return them",
        "videomme": videomme(mods["videomme"]),
        "mvbench": mvbench(mods["mvbench"]),
        "charades_sta": grounding(mods["charades_sta"], "charades",
                                  ([12.0, 20.0], [1.1, 2.2], [0.0, 10.0], [2.0, 6.0], [24.0, 31.5], [5.0, 9.0])),
        "activitynet": grounding(mods["activitynet_tvg"], "activitynet",
                                 ([100.0, 160.0], [10.0, 18.0], [0.0, 10.0], [6.0, 10.0], [3.3, 7.7], [15.0, 26.3])),
        "nextgqa": nextgqa(mods["nextgqa"]),
        "confidence": confidence(Path(args.official)),
    }
    Path(args.out).write_text(json.dumps(data, indent=0, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{k} {len(v['items'])} items" for k, v in data.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main()
