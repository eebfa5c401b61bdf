"""A newcomer's first hour: a malformed JSONL line is named by its line number the same way in
training, infer and eval, the small commands speak the CLI's one error format, more local engines
than cores is said, progress off a terminal is a line per update. (The cluster flow of
docs/cluster.md, Ctrl-C during train and `--resume auto` on an empty run_dir: tests/test_trainer.py;
Ctrl-C during eval: tests/test_eval.py.)"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _malformed(tmp_path: Path, n: int) -> Path:
    """`n` synthetic samples as internal-schema JSONL whose 4th line is cut (not JSON)."""
    from rl.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "syn", n, seed=3)
    lines = (tmp_path / "syn" / "samples.jsonl").read_text().splitlines()
    lines[3] = lines[3][:40]
    path = tmp_path / "syn" / "data.jsonl"  # beside the videos its media paths are relative to
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_malformed_line_is_named_by_its_line_number_everywhere(tmp_path, caplog):
    """infer and training read through read_jsonl, eval through load_benchmark: each skips the bad
    line, counts it and names `file:4`, with the column the JSON error is at."""
    from rl.data.benchmarks import load_benchmark
    from rl.data.files import read_jsonl

    path = _malformed(tmp_path, 6)
    caplog.set_level(logging.WARNING)
    internal = read_jsonl(path)
    bench = load_benchmark(path, "auto", check="none")
    assert len(internal.samples) == len(bench.dataset.samples) == 5
    assert internal.report.counts == bench.dataset.report.counts == {"invalid_line": 1}
    named = [r.getMessage() for r in caplog.records if "not valid JSON" in r.getMessage()]
    assert len(named) == 2 and all(re.search(rf"{re.escape(str(path))}:4: not valid JSON \(.+: column \d+\)$", m)
                                   for m in named), named
    assert not any("line 1 column" in m or "field 'line'" in m for m in named)

    # A benchmark's own JSONL (Charades-STA rows) goes through the same reader.
    from rl.data.benchmarks import write_rows

    rows = tmp_path / "charades.jsonl"
    write_rows([{"video": f"v{i}.mp4", "caption": "x", "timestamp": [0, 1]} for i in range(3)], rows)
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join([lines[0], lines[1][:20], lines[2]]) + "\n")
    charades = load_benchmark(rows, "charades_sta", check="none")
    assert len(charades) == 2 and charades.dataset.report.counts == {"invalid_line": 1}
    assert any(f"{rows}:2: not valid JSON (" in r.getMessage() for r in caplog.records)


def test_small_commands_speak_one_error_format_and_write_readable_files(tmp_path, capsys):
    from launch.cli import build_parser, main
    from rl.data.files import read_jsonl, write_jsonl

    assert main(["filter", "--k", "1", "--data", "x.jsonl", "--out", str(tmp_path / "f.jsonl")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "thinkonce: error: --k must be at least 2, got 1 (all right / all wrong needs several answers)"]

    out = write_jsonl(read_jsonl(_malformed(tmp_path, 5)).samples, tmp_path / "out.jsonl")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask, "written as open() would, not 0600"

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
               if a.dest != "help" and not a.help]
    assert not missing, f"options without help text: {missing}"


def test_more_local_engines_than_cores_is_said():
    from launch.placement import oversubscribed
    from rl.config import load_config

    cfg = load_config(str(ROOT / "configs/tiny_cpu.yaml"), ["rollout.num_engines=8"])
    assert oversubscribed(cfg, "cpu", 2).startswith("rollout.num_engines=8 on 2 CPU cores: the engines share the cores")
    assert oversubscribed(cfg, "cpu", 8) == "" and oversubscribed(cfg, "cuda", 2) == ""


def test_line_progress_off_a_terminal(capsys, monkeypatch):
    """In a log file tqdm's redraws run together: a line per update instead (first, every 10 s, last)."""
    from rl import metrics

    monkeypatch.setattr(metrics.sys.stderr, "isatty", lambda: False, raising=False)
    bar = metrics.progress_bar(3, desc="eval", unit="sample")
    assert isinstance(bar, metrics.LineProgress)
    bar.set_postfix(reward="0.500")
    for _ in range(3):
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "\r" not in "".join(lines)
    assert re.fullmatch(r"eval: 1/3 samples, \d+ s, ETA \d+ s, reward 0.500", lines[0]), lines
    assert re.fullmatch(r"eval: 3/3 samples, \d+ s, reward 0.500", lines[1]), lines
