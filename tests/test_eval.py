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


def test_mc_letter_follows_the_published_extractor():
    assert mc_letter("B") == "B"
    assert mc_letter("The best answer is C.") == "C"
    assert mc_letter("(D) yellow") == "D"
    assert mc_letter("Because the square is green") == "B"  # first capital option letter, as published
    assert mc_letter("the square is green") == ""
    assert mc_letter("E", "ABCD") == "" and mc_letter("E", "ABCDE") == "E"


def test_mvbench_letter_follows_mcq_acc():
    assert mvbench_letter("c. the dog") == "C"
    assert mvbench_letter("(B) walking") == "B"
    assert mvbench_letter("I think it is a.") == "A"
    assert mvbench_letter("walking") == "walking"
    assert score({"kind": "mvbench", "answer": "B"}, "\\boxed{A}<think>x</think>\\boxed{(B) walking}")["correct"]


def test_parse_segment_fallbacks_and_unparsable_is_iou_zero():
    assert parse_segment("[1.5, 3.0]") == (1.5, 3.0)
    assert parse_segment("The event happens in 12.0 - 4.5 seconds") == (4.5, 12.0)
    assert parse_segment('{"start_time": 2, "end_time": 6}') == (2.0, 6.0)
    assert parse_segment("start: 1.0, end: 4.0") == (1.0, 4.0)
    assert parse_segment("it starts at 3 and ends at 5") == (3.0, 5.0)
    assert parse_segment("from 2 to 8") == (2.0, 8.0)
    assert parse_segment("no idea") is None
    assert grounding_scores("no idea", [[1, 2]]) == {"iou": 0.0, "iop": 0.0, "parsed": 0.0}
    assert grounding_scores("[3, 3]", [[1, 4]])["iou"] == 0.0  # a point has no IoU
    scored = grounding_scores("[2, 4]", [[0, 3], [3, 10]])  # max over segments
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
    write_rows([{"video": n, "caption": "a dog runs", "timestamp": [0.1, 0.5]} for n in names[:1]],
               tmp_path / "activitynet_tvg.jsonl")
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
    assert detect(tmp_path / "activitynet_tvg.jsonl") == "activitynet"
    assert len(load_benchmark(tmp_path / "activitynet_tvg.jsonl", media_root=tmp_path / "Charades_v1_480")) == 1

    gqa = load_benchmark(tmp_path / "nextgqa.parquet")
    sample = gqa.dataset[0]
    assert gqa.name == "nextgqa" and sample.problem_type == "gqa" and sample.answer["answer"] == "C"
    assert gqa.truths[sample.id]["segments"] == [[0.1, 0.3], [0.5, 0.8]] and gqa.truths[sample.id]["letters"] == "ABCDE"


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
    one_pass = EarlyExitDecoder(engine, tau=0.97, max_new_tokens=max_new).decode(inputs, "post-hoc")
    rows = [prediction_row(bench, mi.sample, r, sweep=True, tau=0.97, max_new_tokens=max_new)
            for mi, r in zip(inputs, one_pass)]
    # Two taus that split the samples differently: midway between neighbouring confidences.
    confs = sorted({round(r["confidence"], 6) for r in rows if r["think_at"] is not None})
    assert len(confs) >= 3, confs
    taus = [(confs[0] + confs[1]) / 2, (confs[-2] + confs[-1]) / 2]
    curve = tau_curve(rows, taus, max_new)
    for tau, point in zip(taus, curve):
        real = EarlyExitDecoder(engine, tau=tau, max_new_tokens=max_new).decode(inputs, "auto")
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
def test_eval_on_two_engines_equals_one_and_resumes_after_a_kill(tmp_path, toy_dir):
    import ray

    from launch.eval import run_eval

    data = _toy_benchmark(tmp_path)
    one = run_eval(_cfg(toy_dir, "rollout.num_engines=1"), str(toy_dir), str(data), tmp_path / "one", batch_size=3,
                   progress=False)
    assert one["decoded"] == 12 and one["resumed"] == 0 and one["benchmark"] == "mvbench"
    # The toy model was trained on option-less questions: on this benchmark-format set it may think on
    # every item; exits are covered by the tau-curve test, this one checks parity and resume.
    assert 0 <= one["think_ratio"] <= 1
    assert {"accuracy", "mean_generated_tokens", "tokens_per_correct", "per_group", "task_mean_accuracy"} <= set(one)

    # Kill a 2-engine run after its first batches, mid-run, with SIGKILL to the whole process group.
    out = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "launch.cli", "eval", "--model", str(toy_dir), "--data", str(data), "--out", str(out),
           "--batch-size", "3", "--config", str(ROOT / "configs/tiny_cpu.yaml"), f"model.path={toy_dir}",
           "infer.max_new_tokens=48", "logging.progress=false", "rollout.num_engines=2"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pred = out / "predictions.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if pred.is_file() and len(pred.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pred.read_text()
    done_before = len(before.splitlines())
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
