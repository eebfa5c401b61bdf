"""`thinkonce eval`: benchmark readers, parity scoring, the one-pass tau curve, engines, resume, errors.

Engine tests use the toy model (rollout.toy): confident on colour questions, unsure on count
questions, so `auto` exits on part of the samples and thinks on the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reward.benchmarks import aggregate, grounding_scores, mc_letter, mvbench_letter, parse_segment, score
from rl.data.benchmarks import detect, load_benchmark, write_rows

ROOT = Path(__file__).resolve().parent.parent
LETTERS4 = ["A. red", "B. green", "C. blue", "D. yellow"]


# ---------------------------------------------------------------------------------------------
# Scoring: the published extractors


PAPER = json.loads((ROOT / "tests" / "data" / "paper_eval.json").read_text())
"""Responses scored by the official VideoAuto-R1 functions (scripts/paper_eval_expected.py)."""


def _official_layout(bench: str, root: Path) -> Path:
    """The recorded docs written as the official annotation files (check="none": no videos needed)."""
    items = PAPER[bench]["items"]
    if bench == "mvbench":
        tasks: dict[str, list] = {}
        for item in items:
            tasks.setdefault(item["task"], []).append(item["doc"])
        for task, docs in tasks.items():
            write_rows(docs, root / "mvbench" / "json" / f"{task}.json")
        return root / "mvbench"
    return write_rows([i["doc"] for i in items], root / f"{bench}.parquet")


def _item_ids(bench: str) -> list[str]:
    items, counters, ids = PAPER[bench]["items"], {}, []
    for index, item in enumerate(items):
        doc = item["doc"]
        if bench == "videomme":
            ids.append(doc["question_id"])
        elif bench == "mvbench":
            k = counters[item["task"]] = counters.get(item["task"], -1) + 1
            ids.append(f"{item['task']}/{k}")
        elif bench == "nextgqa":
            ids.append(f"{doc['video']}/{doc['qid']}")
        else:
            ids.append(f"{bench}/{index}")
    return ids


@pytest.mark.parametrize("bench", ["videomme", "mvbench", "charades_sta", "activitynet", "nextgqa"])
def test_paper_profile_scores_every_item_and_aggregate_as_the_official_code(bench, tmp_path):
    from reward.benchmarks import headline, scored_text

    loaded = load_benchmark(_official_layout(bench, tmp_path), bench, check="none")
    assert len(loaded) == len(PAPER[bench]["items"]) >= 40
    rows = []
    for item, sid in zip(PAPER[bench]["items"], _item_ids(bench)):
        truth = loaded.truths[sid]
        got = score(truth, scored_text(item["response"], item["on_a1"]), "paper")
        want = item["expected"]
        where = (item["response"], item["on_a1"])
        for key in ("correct", "answered", "pred"):
            if key in want:
                assert got[key] == want[key], (key, where)
        if "iou" in want:
            assert got["iou"] == want["iou"], where  # the same float: R@m thresholds see what the paper saw
        rows.append({**got, "group": truth["group"]})
    figures = headline(rows, bench)
    flat = {**{k: v for k, v in figures.items() if not isinstance(v, dict)},
            **{f"{k}/{g}": v for k, d in figures.items() if isinstance(d, dict) for g, v in d.items()}}
    expected = PAPER[bench]["aggregates"]
    assert set(expected) <= set(flat), (sorted(expected), sorted(flat))
    for key, value in expected.items():
        assert flat[key] * 100 == pytest.approx(value, abs=1e-9), key


def test_paper_confidence_is_the_official_wrappers():
    from rl.tiny import build_tokenizer
    from rollout.early_exit import paper_confidence

    tok = build_tokenizer()
    items = PAPER["confidence"]["items"]
    assert sum(i["expected"] > 0 for i in items) >= 10 and sum(i["expected"] < 0 for i in items) >= 10
    for item in items:
        assert tok.encode(item["text"], add_special_tokens=False) == item["token_ids"], "the tiny tokenizer changed"
        _, conf = paper_confidence(tok, item["token_ids"], item["logprobs"], item["text"], full=True)
        assert conf == pytest.approx(item["expected"], abs=1e-9), item["text"]


def test_the_scored_text_is_the_wrappers_choice():
    from reward.benchmarks import scored_text

    text = "\\boxed{B}<think>maybe \\boxed{C} or 0:10 - 0:20</think>\\boxed{D} "
    assert scored_text(text, True) == "\\boxed{B}" and scored_text(text, False) == "\\boxed{D}"
    assert scored_text("\\boxed{A}<think>cut", False) == "\\boxed{A}<think>cut"  # no </think>: the whole text
    truth = {"kind": "mc", "answer": "C", "letters": "ABCD", "group": "short"}
    assert not score(truth, scored_text(text, True))["correct"]  # C inside the thought is never read


def test_corrected_profile_fixes_each_published_defect():
    c = "corrected"
    assert mc_letter("Because the dog runs") == "B" and mc_letter("Because the dog runs", profile=c) == ""
    assert mc_letter("The best option is D") == "D" and mc_letter("The correct option is D", profile=c) == "D"
    assert mc_letter("Best option: A", profile=c) == "A"
    assert mvbench_letter("it is a cat") == "A" and mvbench_letter("it is a cat", c) == "it is a cat"
    assert mvbench_letter("b", c) == "B" and mvbench_letter("c. the dog", c) == "C"
    assert parse_segment("0:10 - 0:18") == (0.0, 10.0) and parse_segment("0:10 - 0:18", c) == (10.0, 18.0)
    assert parse_segment("00:00:06 - 00:00:10", c) == (6.0, 10.0)
    assert parse_segment("15s - 26.3s") is None and parse_segment("15s - 26.3s", c) == (15.0, 26.3)
    assert parse_segment("Start time: 107.2s, End time: 157.2s", c) == (107.2, 157.2)
    assert parse_segment('{"start_time": 2, "end_time": 6}') is None  # no a-SEP-b interval: IoU 0, as published
    assert parse_segment('{"start_time": 2, "end_time": 6}', c) == (2.0, 6.0)
    from reward.benchmarks import final_box

    assert final_box("\\boxed{\\boxed{B}}") == "\\boxed{B}" and final_box("\\boxed{\\boxed{B}}", c) == "B"
    assert final_box("\\boxed{\\frac{\\sqrt{3}}{2}}") == "\\boxed{\\frac{\\sqrt{3}}{2}}"  # too deep: the whole text
    assert final_box("\\boxed{\\frac{\\sqrt{3}}{2}}", c) == "\\frac{\\sqrt{3}}{2}"
    mvb = [{"group": "t", "correct": True, "answered": True}, {"group": "t", "correct": False, "answered": False}]
    from reward.benchmarks import headline

    assert headline(mvb, "mvbench")["accuracy"] == 1.0  # paper: the empty answer leaves the denominator
    scored = [score({"kind": "mvbench", "answer": "A"}, r, c) for r in ("\\boxed{A}", "\\boxed{}")]
    assert headline([{**s, "group": "t"} for s in scored], "mvbench")["accuracy"] == 0.5


def test_post_hoc_scores_the_answer_it_chose_and_summaries_report_latency():
    from launch.eval import prediction_row, summarize
    from rl.data.benchmarks import Benchmark
    from rl.data.records import Dataset
    from rl.types import Sample
    from rollout.early_exit import EarlyExitResult

    sample = Sample(id="q1", source="videomme", problem_type="exact_match", question="q", answer="B")
    bench = Benchmark("videomme", Dataset([sample]), {"q1": {"kind": "mc", "answer": "B", "letters": "ABCD",
                                                             "group": "short"}})
    text = "\\boxed{B}<think>no, C</think>\\boxed{C}"
    rows = []
    for thought, latency in ((False, 0.5), (True, 2.0)):  # post-hoc chose a1 / the final answer
        result = EarlyExitResult(sample_id="q1", a1="B", confidence=0.99, thought=thought, answer="C" if thought else "B",
                                 text=text, token_ids=[1] * 9, generated_tokens=9, latency_s=latency)
        rows.append(prediction_row(bench, sample, result, sweep=False, tau=0.97, max_new_tokens=64))
    assert [r["correct"] for r in rows] == [True, False]
    summary = summarize(rows, "videomme")
    assert summary["accuracy"] == 0.5 and summary["headline"]["per_duration"] == {"short": 0.5}
    assert summary["latency_p50_s"] == pytest.approx(1.25) and summary["latency_p95_s"] == pytest.approx(1.925)


def test_grounding_iou_is_the_published_float():
    assert grounding_scores("\\boxed{(1.1, 1.65)}", [[1.1, 2.2]])["iou"] == (1.65 - 1.1) / (2.2 - 1.1)
    assert grounding_scores("[3, 3]", [[3, 3]])["iou"] == 0.0  # the published code divides by zero here
    assert grounding_scores("no idea", [[1, 2]]) == {"iou": 0.0, "iop": 0.0, "parsed": 0.0}
    scored = grounding_scores("[2, 4]", [[0, 3], [3, 10]], formula="union")  # NExT-GQA: max over segments
    assert scored["iou"] == pytest.approx(0.25) and scored["iop"] == pytest.approx(0.5)


def test_aggregate_reports_tokens_per_correct_grounding_and_iop():
    rows = [
        {"correct": True, "thought": False, "generated_tokens": 10, "iou": 0.8, "iop": 0.9, "pred": "A"},
        {"correct": False, "thought": True, "generated_tokens": 50, "iou": 0.4, "iop": 0.6, "pred": "B"},
        {"correct": True, "thought": True, "generated_tokens": 60, "iou": 0.0, "iop": 0.0, "pred": "C"},
    ]
    m = aggregate(rows)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["think_ratio"] == pytest.approx(2 / 3)
    assert m["mean_generated_tokens"] == 40 and m["tokens_per_correct"] == 60
    assert m["miou"] == pytest.approx(0.4) and m["r@0.3"] == pytest.approx(2 / 3) and m["r@0.7"] == pytest.approx(1 / 3)
    assert m["miop"] == pytest.approx(0.5) and m["iop@0.5"] == pytest.approx(2 / 3)
    assert m["acc@gqa"] == pytest.approx(1 / 3)  # right answer and IoP >= 0.5
    assert m["latency_p50_s"] is None  # rows without a latency
    timed = [{"correct": True, "thought": False, "generated_tokens": 1, "latency_s": t} for t in (1.0, 2.0, 3.0, 4.0, 10.0)]
    assert aggregate(timed)["latency_p50_s"] == 3.0 and aggregate(timed)["latency_p95_s"] == pytest.approx(8.8)
    assert aggregate([{"correct": False, "thought": True, "generated_tokens": 5}])["tokens_per_correct"] is None


# ---------------------------------------------------------------------------------------------
# Readers: the lmms-eval annotation formats


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    from rl.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("videos")
    generate_synthetic(root, 8, seed=0)
    return sorted((root / "videos").glob("*.mp4"))


def _place(videos: list[Path], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for v in videos:
        if not (folder / v.name).exists():
            os.symlink(v, folder / v.name)
    return [v.name for v in videos]


def test_readers_of_every_benchmark_format(tmp_path, videos):
    names = _place(videos, tmp_path / "data")  # VideoMME keeps videos in data/
    write_rows([{"videoID": Path(n).stem, "question_id": f"q{i}", "duration": "short" if i % 2 else "long",
                 "task_type": "Counting Problem", "question": "What colour is it?", "options": LETTERS4,
                 "answer": "B"} for i, n in enumerate(names[:3])], tmp_path / "videomme.parquet")
    (tmp_path / "mvbench" / "json").mkdir(parents=True)
    _place(videos, tmp_path / "mvbench" / "ssv2_video_mp4")
    write_rows([{"video": n, "question": "Which?", "candidates": ["run", "walk", "sit"], "answer": "walk"}
                for n in names[:2]], tmp_path / "mvbench" / "json" / "action_antonym.json")
    write_rows([{"video": names[0], "question": "Which?", "candidates": ["a", "b"], "answer": "zzz"}],
               tmp_path / "mvbench" / "json" / "action_count.json")  # answer not a candidate: skipped
    _place(videos, tmp_path / "Charades_v1_480")
    write_rows([{"video": n, "caption": "person opens a door", "timestamp": [0.2, 0.9]} for n in names[:2]]
               + [{"video": "missing.mp4", "caption": "x", "timestamp": [0, 1]}], tmp_path / "charades_test.json")
    _place(videos, tmp_path / "nextgqa_videos")
    write_rows([{"video": Path(n).stem, "qid": 7, "question": "Why?", "candidates": list("vwxyz"), "answer": "x",
                 "solution": [[0.1, 0.3], [0.5, 0.8]]} for n in names[:2]], tmp_path / "nextgqa.parquet")

    vm = load_benchmark(tmp_path / "videomme.parquet")
    assert vm.name == "videomme" and len(vm) == 3
    s = vm.dataset[0]
    assert s.options == ["red", "green", "blue", "yellow"] and "A. red" in s.question and s.answer == "B"
    assert vm.truths[s.id] == {"kind": "mc", "answer": "B", "letters": "ABCD", "group": "long"}

    mvb = load_benchmark(tmp_path / "mvbench")
    assert mvb.name == "mvbench" and len(mvb) == 2 and mvb.dataset.report.counts == {"invalid_answer": 1}
    assert {t["group"] for t in mvb.truths.values()} == {"action_antonym"} and mvb.dataset[0].answer == "B"
    assert len(load_benchmark(tmp_path / "mvbench" / "json" / "action_antonym.json")) == 2  # one task file

    ch = load_benchmark(tmp_path / "charades_test.json")
    assert ch.name == "charades_sta" and len(ch) == 2 and ch.dataset.report.total == 1  # the missing video
    assert ch.dataset[0].problem_type == "iou" and ch.truths[ch.dataset[0].id]["segments"] == [[0.2, 0.9]]

    gqa = load_benchmark(tmp_path / "nextgqa.parquet")
    sample = gqa.dataset[0]
    assert gqa.name == "nextgqa" and sample.problem_type == "gqa" and sample.answer["answer"] == "C"
    assert gqa.truths[sample.id]["segments"] == [[0.1, 0.3], [0.5, 0.8]] and gqa.truths[sample.id]["letters"] == "ABCDE"


OFFICIAL = {
    # benchmark: (annotation file, video folder, rows) in the layout the official yaml + utils read
    "videomme": ("videomme/test-00000-of-00001.parquet", "videomme/data", lambda n, i: {
        "video_id": f"{i:03d}", "duration": ("short", "medium", "long")[i % 3], "domain": "Knowledge",
        "sub_category": "Humanity & History", "url": "https://x", "videoID": Path(n).stem, "question_id": f"{i:03d}-1",
        "task_type": "Counting Problem", "question": f"How many cups ({i})?",
        "options": ["A. one", "B. two", "C. three", "D. four"], "answer": "ABCD"[i % 4]}),
    "mvbench": ("mvbench/json/action_sequence.json", "mvbench/star/Charades_segment", lambda n, i: {
        "video": n, "question": f"What did the person do first ({i})?", "candidates": ["sat", "ate", "ran"],
        "answer": ["sat", "ate", "ran"][i % 3], "start": 1.5, "end": 9.0, "accurate_start": 1.5}),
    "charades_sta": ("charades_sta/test.parquet", "charades_sta/Charades_v1_480", lambda n, i: {
        "video": n, "caption": f"person opens the door {i}", "timestamp": [0.2 * i, 0.2 * i + 0.5]}),
    "activitynet": ("activitynet/test.parquet", "activitynet/val2_videos", lambda n, i: {
        "video": n, "caption": f"a dog runs {i}", "timestamp": [0.1, 0.6 + i]}),
    "nextgqa": ("nextgqa/test.parquet", "nextgqa/nextgqa_videos", lambda n, i: {
        "video": n, "qid": i, "question": f"why did the boy cry ({i})", "candidates": list("vwxyz"),
        "answer": "vwxyz"[i % 5], "solution": [[0.1, 0.3 + i], [0.5, 0.8]]}),
}


OFFICIAL_TEXT = {
    # the `*_boxed` tasks' doc_to_text with their post prompts, written out
    "videomme": lambda r: ("Select the best answer to the following multiple-choice question based on the video. "
                           "Respond with only the letter (A, B, C, or D) of the correct option.\n" + r["question"] + "\n"
                           + "\n".join(r["options"]) + "\nPut your final answer in \\boxed{}."),
    "mvbench": lambda r: ("Question: " + r["question"] + "\nOptions:\n"
                          + "".join(f"({'ABCDE'[i]}) {c}\n" for i, c in enumerate(r["candidates"]))
                          + "Put your final answer in \\boxed{}."),
    "grounding": lambda r: ("Locate the start and end timestamps of the video segment corresponding to the description: "
                            + r["caption"] + " Please provide the start and end timestamps (in seconds, precise to one "
                            "decimal places) in the format \\boxed{[start, end]}."),
    "nextgqa": lambda r: ("Question: " + r["question"] + "\nOptions:\n"
                          + "\n".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(r["candidates"])) + "\n"
                          "Please answer the question, and then provide the video segment that best supports your answer. "
                          "The start and end timestamps must be in seconds with exactly one decimal place.\n"
                          "Output format: \\boxed{answer <> [start, end]}. For example: \\boxed{A <> [20.3, 30.8]}."),
}


@pytest.mark.parametrize("bench", sorted(OFFICIAL))
def test_readers_load_the_official_layouts_with_and_without_benchmark(bench, tmp_path, videos):
    from rl.render import user_text

    file, folder, make = OFFICIAL[bench]
    names = _place(videos[:4], tmp_path / folder)
    rows = [make(n, i) for i, n in enumerate(names)]
    path = write_rows(rows, tmp_path / file)
    given = tmp_path / folder.split("/")[0] if bench == "mvbench" else path
    media_root = tmp_path / "videomme" if bench == "videomme" else None
    for name in ("auto", bench):
        loaded = load_benchmark(given, name, media_root)
        assert loaded.name == bench and len(loaded) == len(rows), loaded.dataset.report.summary()
        for row, sample in zip(rows, loaded.dataset):
            truth = loaded.truths[sample.id]
            assert Path(sample.media_path).resolve() == (tmp_path / folder / Path(names[rows.index(row)]).name).resolve()
            assert sample.video_start is None and sample.video_end is None  # the official tasks read whole videos
            if bench in ("charades_sta", "activitynet"):
                assert user_text(sample) == OFFICIAL_TEXT["grounding"](row) and truth["segments"] == [row["timestamp"]]
                continue
            options = [o[3:] for o in row["options"]] if bench == "videomme" else row["candidates"]
            assert sample.options == options
            letter = row["answer"] if bench == "videomme" else "ABCDE"[row["candidates"].index(row["answer"])]
            assert truth["answer"] == letter
            assert user_text(sample) == OFFICIAL_TEXT[bench](row), bench
            if bench == "videomme":
                assert truth["group"] == row["duration"]
            if bench == "mvbench":
                assert truth["group"] == "action_sequence"
            if bench == "nextgqa":
                assert truth["segments"] == row["solution"]


def test_grounding_files_are_told_apart_by_their_video_folder_or_named(tmp_path, videos):
    from rl.data.benchmarks import BenchmarkError

    rows = [{"video": videos[0].name, "caption": "x", "timestamp": [0.1, 0.5]}]
    path = write_rows(rows, tmp_path / "activitynet_test.json")
    with pytest.raises(BenchmarkError) as err:
        detect(path)  # no video folder beside it: the file name decides nothing
    assert "--benchmark" in str(err.value) and len(str(err.value).splitlines()) == 1
    _place(videos[:1], tmp_path / "Charades_v1_480")
    assert detect(path) == "charades_sta"  # the folder, not the name, tells
    assert load_benchmark(path, "activitynet", tmp_path / "Charades_v1_480").name == "activitynet"


# ---------------------------------------------------------------------------------------------
# The tau curve from one pass equals real `auto` runs


@pytest.fixture(scope="module")
def engine(toy_dir):
    from rollout.engine import EngineSpec
    from rollout.vllm_engine import VLLMEngine

    return VLLMEngine(EngineSpec(model_dir=str(toy_dir), max_model_len=2048, enforce_eager=True))


@pytest.mark.slow
def test_tau_curve_from_one_pass_equals_real_auto_runs(engine, toy_dir, tmp_path):
    from launch.eval import at_tau, plot_curve, prediction_row, tau_curve
    from rl.data.benchmarks import Benchmark
    from rl.data.records import Dataset
    from rollout.early_exit import EarlyExitDecoder
    from rollout.toy import toy_inputs, toy_samples

    inputs = toy_inputs(toy_dir, toy_samples(10, sure_every=3), seed=5)
    bench = Benchmark("internal", Dataset([mi.sample for mi in inputs]))
    max_new = 80
    one_pass = EarlyExitDecoder(engine, tau=0.97, max_new_tokens=max_new, rule="paper").decode(inputs, "post-hoc")
    rows = [prediction_row(bench, mi.sample, r, sweep=True, tau=0.97, max_new_tokens=max_new)
            for mi, r in zip(inputs, one_pass)]
    # Two taus that split the samples differently: midway between neighbouring confidences.
    confs = sorted({round(r["confidence"], 6) for r in rows if r["think_at"] is not None})
    assert len(confs) >= 3, confs
    taus = [(confs[0] + confs[1]) / 2, (confs[-2] + confs[-1]) / 2]
    curve = tau_curve(rows, taus, max_new)
    for tau, point in zip(taus, curve):
        real = EarlyExitDecoder(engine, tau=tau, max_new_tokens=max_new, rule="paper").decode(inputs, "auto")
        derived = [at_tau(r, tau, max_new) for r in rows]
        assert [d["answer"] for d in derived] == [r.answer for r in real]
        assert [d["thought"] for d in derived] == [r.thought for r in real]
        assert [d["generated_tokens"] for d in derived] == [r.generated_tokens for r in real]
        assert point["mean_generated_tokens"] == pytest.approx(sum(r.generated_tokens for r in real) / len(real))
        assert point["think_ratio"] == pytest.approx(sum(r.thought for r in real) / len(real))
    assert curve[0]["think_ratio"] < curve[1]["think_ratio"], "the two taus must exercise both outcomes"
    png = plot_curve(curve, tmp_path / "curve.png", "toy")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Engines, resume, errors


def _toy_benchmark(tmp_path: Path, count: int = 12) -> Path:
    """NExT-QA-style multiple choice in lmms-eval's MVBench format (video, question, candidates,
    answer text) over the toy prompts: colour questions (the toy model is sure) and count questions
    (unsure). Each video holds a toy clip's frames twice over at 4 fps, so 2 fps sampling decodes
    exactly the frames the toy model was trained on; the question is the toy question itself."""
    from rollout.toy import SURE_OPTIONS, SURE_QUESTION, UNSURE_QUESTION, write_toy_video

    folder = tmp_path / "bench"
    (folder / "json").mkdir(parents=True, exist_ok=True)
    (folder / "perception" / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        sure = i % 2 == 0
        write_toy_video(folder / "perception" / "videos" / f"toy{i}.mp4", "qwen2_5_vl", 21 + i)
        rows.append({"video": f"toy{i}.mp4", "question": SURE_QUESTION if sure else UNSURE_QUESTION,
                     "candidates": SURE_OPTIONS if sure else ["1", "2", "3", "4"],
                     "answer": SURE_OPTIONS[1] if sure else "3"})
    return write_rows(rows, folder / "json" / "action_count.json").parent.parent


def _cfg(toy_dir, *extra: str):
    from rl.config import load_config

    return load_config(ROOT / "configs/tiny_cpu.yaml", [f"model.path={toy_dir}", "infer.max_new_tokens=48",
                                                         "logging.progress=false", *extra])


def _rows(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}), "an id was decoded twice"
    return {r["id"]: r for r in rows}


def _same(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for field in ("answer", "thought", "generated_tokens", "a1", "correct", "text"):
            assert a[key][field] == b[key][field], (key, field)
        assert a[key]["confidence"] == pytest.approx(b[key]["confidence"], abs=1e-4)


@pytest.mark.slow
def test_eval_on_two_engines_equals_one_and_resumes_after_ctrl_c(tmp_path, toy_dir):
    import ray

    from launch.eval import run_eval

    data = _toy_benchmark(tmp_path)
    one = run_eval(_cfg(toy_dir, "rollout.num_engines=1"), str(toy_dir), str(data), tmp_path / "one", batch_size=3,
                   progress=False)
    assert one["decoded"] == 12 and one["resumed"] == 0 and one["benchmark"] == "mvbench"
    # The toy model was trained on option-less questions: on this benchmark-format set it may think on
    # every item; exits are covered by the tau-curve test, this one checks parity and resume.
    assert 0 <= one["think_ratio"] <= 1
    assert {"accuracy", "mean_generated_tokens", "tokens_per_correct", "per_group", "headline", "latency_p50_s",
            "latency_p95_s"} <= set(one)

    # Ctrl-C a 2-engine run after its first batches, mid-run (SIGINT to the whole process group, as a
    # terminal sends it): one line names the predictions kept and the command that continues.
    out = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    args = ["eval", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--batch-size", "3", "--config",
            str(ROOT / "configs/tiny_cpu.yaml"), f"model.path={toy_dir}", "infer.max_new_tokens=48", "logging.progress=false",
            "rollout.num_engines=2"]
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", *args], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pred = out / "predictions.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if pred.is_file() and len(pred.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    before = pred.read_text()
    done_before = len(before.splitlines())
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-4000:]
    assert err.strip().splitlines()[-1] == (f"thinkonce: interrupted; kept {done_before} predictions in {pred}; continue "
                                            f"with the same command (it skips them): thinkonce {' '.join(args)}"), err[-3000:]
    assert 3 <= done_before < 12
    with open(pred, "a") as fh:
        fh.write('{"id": "toy-11", "answ')  # a kill during a write leaves a cut line

    two = run_eval(_cfg(toy_dir, "rollout.num_engines=2"), str(toy_dir), str(data), out, batch_size=3, progress=False)
    assert two["resumed"] == done_before and two["decoded"] == 12 - done_before
    assert pred.read_text().startswith(before), "rows written before the kill are kept as they were"
    _same(_rows(tmp_path / "one"), _rows(out))
    assert two["accuracy"] == one["accuracy"] and two["mean_generated_tokens"] == one["mean_generated_tokens"]

    again = run_eval(_cfg(toy_dir, "rollout.num_engines=2"), str(toy_dir), str(data), out, batch_size=3, progress=False)
    assert again["decoded"] == 0 and again["resumed"] == 12  # nothing left: no engine started
    ray.shutdown()


def test_eval_input_errors_are_one_line_exit_2_before_any_engine(tmp_path, toy_dir, capsys):
    import ray

    from launch.cli import main

    base = ["eval", "--model", str(toy_dir), "--out", str(tmp_path / "o"), "--config", str(ROOT / "configs/tiny_cpu.yaml")]
    assert main(base + ["--data", str(tmp_path / "nope.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"thinkonce: error: data not found: {tmp_path / 'nope.parquet'}"]

    write_rows([{"video": "gone.mp4", "caption": "x", "timestamp": [0, 1]}], tmp_path / "charades.json")
    assert main(base + ["--data", str(tmp_path / "charades.json")]) == 2
    assert "--benchmark charades_sta" in capsys.readouterr().err  # no video folder tells Charades from ActivityNet
    assert main(base + ["--data", str(tmp_path / "charades.json"), "--benchmark", "charades_sta"]) == 2
    assert "no usable samples" in capsys.readouterr().err
    assert not ray.is_initialized(), "no engine may start without samples"

    assert main(["eval", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "charades.json"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_infer_and_train_with_no_usable_samples_exit_2(tmp_path, toy_dir, capsys):
    from launch.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "source": "s", "problem_type": "exact_match", "question": "q", "answer": "x", '
                   '"media_kind": "video", "media_path": "missing.mp4"}\n')
    assert main(["infer", "--model", str(toy_dir), "--data", str(bad), "--config", str(ROOT / "configs/tiny_cpu.yaml")]) == 2
    assert "no usable samples" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"thinkonce: error: config file not found: {tmp_path / 'missing.yaml'}"


def test_a_new_run_moves_an_earlier_run_aside(tmp_path):
    from rl.metrics import MetricsLogger, read_metrics, set_aside_earlier_run

    run = tmp_path / "run"
    assert set_aside_earlier_run(run) is None
    log = MetricsLogger(run, 2, 0, {}, wandb_mode="disabled", progress=False)
    log.log(0, {"reward/total": 1.0})
    log.close()
    moved = set_aside_earlier_run(run)
    assert moved is not None and moved.name.startswith("run.old-") and not run.exists()
    assert read_metrics(moved)[0]["reward/total"] == 1.0
    log = MetricsLogger(run, 2, 0, {}, wandb_mode="disabled", progress=False)
    log.log(0, {"reward/total": 2.0})
    log.close()
    assert [r["reward/total"] for r in read_metrics(run)] == [2.0]


def test_repeated_library_warnings_appear_once_per_process(caplog, request):
    import logging

    from rl.runtime import REPEATING_LOGGERS, quiet_repeated_warnings

    log = logging.getLogger("vllm.v1.worker.cpu_worker")
    assert log.name in REPEATING_LOGGERS
    kept = list(log.filters)
    for f in kept:  # an earlier test in this process may have installed the filter and seen the message
        log.removeFilter(f)
    request.addfinalizer(lambda: [log.addFilter(f) for f in kept if f not in log.filters])
    quiet_repeated_warnings()
    quiet_repeated_warnings()  # idempotent: one filter per logger
    assert len(log.filters) == 1
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(50):
            log.warning("CPU backend doesn't allow to use `torch.set_num_threads` after the thread binding, skip it.")
        log.warning("another warning")
        log.info("info lines are not filtered")
        log.info("info lines are not filtered")
    assert [r.getMessage()[:13] for r in caplog.records] == ["CPU backend d", "another warni", "info lines ar", "info lines ar"]
