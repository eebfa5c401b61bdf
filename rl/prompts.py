"""Every prompt string of ThinkOnce, in one place (method.md section 2); rl.render renders them.

All strings are the official ones, verbatim: the released checkpoints know them. The system prompt
has two variants: training uses it WITHOUT a trailing newline (what the checkpoints were trained
on), inference/evaluation WITH one (what the official evaluation code sends). A `Prompts` holds the
strings of one role; `Prompts.from_config(data, training=...)` applies `data.system_prompt` (text or
a file) and `data.prompts` (a YAML file overriding any user-turn template).

The user turn is the visual item, then the text its problem type writes (`rl.problems`):

    iou            GROUNDING_TEMPLATE with {description}                 (no answer suffix)
    gqa            GROUNDED_QA_TEMPLATE with {question} and {options}    (no answer suffix)
    otherwise      the question body + USER_SUFFIX

The question body of a multiple-choice item is laid out by its source as trained (VideoR1:
`{problem}Options:\n` + one `A. x\n` per option, no newline after the problem; TVBench and our
synthetic tasks: `Question: {question}\nOptions:\n` + `A. x\n` lines): the loaders build it with
the layout functions below, so `Sample.question` is the body.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import yaml

LETTERS = string.ascii_uppercase
"""Option letters, in order: option i is labelled LETTERS[i]."""


if TYPE_CHECKING:
    from rl.config import DataConfig

SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "FIRST: Output your initial answer inside the first \\boxed{...} without any analysis or explanations. "
    "If you cannot determine the answer without reasoning, output \\boxed{Let's analyze the problem step by step.} instead.\n"
    "THEN: Think through the reasoning as an internal monologue enclosed within <think>...</think>.\n"
    "AT LAST: Output the final answer again inside \\boxed{...}. If you believe the previous answer was correct, "
    "repeat it; otherwise, correct it.\n"
    "Output format: \\boxed{...}<think>...</think>\\boxed{...}"
)
"""The training system prompt: no trailing newline (what the released checkpoints were trained on)."""
SYSTEM_PROMPT_EVAL = SYSTEM_PROMPT + "\n"
"""The inference/evaluation variant: the official evaluation code appends one newline."""

USER_SUFFIX = "\nPut your final answer in \\boxed{}."
"""Appended to every question that is not grounding or grounded QA."""
GROUNDING_TEMPLATE = (
    "Locate the start and end timestamps of the video segment corresponding to the description: {description} "
    "Please provide the start and end timestamps (in seconds, precise to one decimal places) "
    "in the format \\boxed{[start, end]}."
)
GROUNDED_QA_TEMPLATE = (
    "Question: {question}\nOptions:\n{options}\n"
    "Please answer the question, and then provide the video segment that best supports your answer. "
    "The start and end timestamps must be in seconds with exactly one decimal place.\n"
    "Output format: \\boxed{answer <> [start, end]}. For example: \\boxed{A <> [20.3, 30.8]}."
)
"""NExT-GQA's user text; {options} is the `A. x` lines joined by newlines."""

def fill(template: str, **fields: str) -> str:
    """`{name}` placeholders replaced by text; other braces (`\\boxed{...}`) stay as written."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template


def option_lines(options: Sequence[str]) -> list[str]:
    """`A. x` per option (the label the reward's letter rule reads)."""
    return [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]


def videor1_question(problem: str, labelled_options: Sequence[str]) -> str:
    """VideoR1 multiple choice as trained: `{problem}Options:\n` then each released option (`A. x`) and a newline."""
    return problem + "Options:\n" + "".join(option + "\n" for option in labelled_options)


def choice_question(question: str, options: Sequence[str]) -> str:
    """TVBench's layout (also the synthetic tasks'): `Question: {question}\nOptions:\n` then `A. x\n` lines."""
    return f"Question: {question}\nOptions:\n" + "".join(line + "\n" for line in option_lines(options))


def listed_question(question: str, lines: Sequence[str]) -> str:
    """The question, then one option line each (STI-Bench's `(K) v`, MMR-VBench's `A. x`)."""
    return question + "\n" + "\n".join(lines)


def _read_text(value: str, what: str) -> str:
    """`value` itself, or the contents of the file it names (trailing newlines dropped)."""
    path = Path(value)
    if len(value) < 4096 and "\n" not in value and path.suffix in (".txt", ".md"):
        if not path.is_file():
            raise FileNotFoundError(f"{what}: prompt file not found: {value}")
        return path.read_text(encoding="utf-8").rstrip("\n")
    return value


@dataclass(frozen=True)
class Prompts:
    """The strings of one role (training or evaluation); the defaults are the official ones for training."""

    system: str = SYSTEM_PROMPT
    answer_suffix: str = USER_SUFFIX
    grounding: str = GROUNDING_TEMPLATE
    grounded_qa: str = GROUNDED_QA_TEMPLATE

    @classmethod
    def official(cls, training: bool = True) -> "Prompts":
        return cls(system=SYSTEM_PROMPT if training else SYSTEM_PROMPT_EVAL)

    @classmethod
    def from_config(cls, data: "DataConfig", training: bool = True) -> "Prompts":
        """The official strings with `data.system_prompt` and `data.prompts` applied.

        `data.system_prompt` (text, or a .txt/.md file) replaces the training system prompt; the
        evaluation role appends one newline to it, as the official code does to its own.
        `data.prompts` is a YAML file mapping any of answer_suffix, grounding, grounded_qa to text.
        """
        base = _read_text(data.system_prompt, "data.system_prompt") if data.system_prompt else SYSTEM_PROMPT
        fields: dict[str, str] = {"system": base if training else base + "\n"}
        if data.prompts:
            try:
                overrides = yaml.safe_load(Path(data.prompts).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"data.prompts: cannot read {data.prompts}: {exc}") from None
            allowed = {"answer_suffix", "grounding", "grounded_qa"}
            if not isinstance(overrides, dict) or not set(overrides) <= allowed or not all(
                isinstance(v, str) for v in overrides.values()
            ):
                raise ValueError(f"data.prompts: {data.prompts} must map some of {sorted(allowed)} to strings")
            fields.update(overrides)
        return cls(**fields)


THINK_TAGS = ("<think>", "</think>")


def plain_think_tokenizer(model_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> Path:
    """A model directory whose tokenizer reads `<think>`/`</think>` as plain text, as the paper's patched checkpoint.

    Stock Qwen3-VL registers both tags as added tokens (one id each); the VideoAuto-R1 Qwen3-VL was
    trained with them spelled by ordinary BPE pieces (`<`, `think`, `>`), as Qwen2.5-VL does. The
    copy drops the two tags from `tokenizer.json`'s added tokens and `tokenizer_config.json`'s
    decoder table; every other file is symlinked (the weights are shared, their two rows unused).
    """
    src, out = Path(model_dir), Path(out_dir)
    if not (src / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{src}: no tokenizer.json (a Hugging Face model directory is expected)")
    out.mkdir(parents=True, exist_ok=True)
    edited = ("tokenizer.json", "tokenizer_config.json")
    for path in src.iterdir():
        link = out / path.name
        if path.name not in edited and not link.exists():
            link.symlink_to(path.resolve(), target_is_directory=path.is_dir())
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["added_tokens"] = [t for t in tokenizer.get("added_tokens", []) if t["content"] not in THINK_TAGS]
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    if (src / "tokenizer_config.json").is_file():
        config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
        decoder = config.get("added_tokens_decoder", {})
        config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if v.get("content") not in THINK_TAGS}
        extra = config.get("additional_special_tokens")
        if isinstance(extra, list):
            config["additional_special_tokens"] = [t for t in extra if t not in THINK_TAGS]
        (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return out
