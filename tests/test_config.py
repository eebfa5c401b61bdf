"""The config tree: paper defaults, YAML presets, dotted overrides, errors that name key and value."""

from pathlib import Path

import pytest

from rl.config import Config, ConfigError, load_config, to_yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_papers_recipe():
    cfg = Config()
    assert (cfg.reward.w1, cfg.reward.w2, cfg.reward.lambda_fmt, cfg.reward.alpha) == (0.9, 1.1, 1.0, 0.3)
    assert cfg.rollout.n == 16 and cfg.rollout.temperature == 1.0 and cfg.rollout.top_p == 1.0
    assert cfg.rollout.max_new_tokens == 2048 and cfg.data.max_prompt_length == 8192
    assert (cfg.grpo.clip_low, cfg.grpo.clip_high, cfg.grpo.kl_coef, cfg.grpo.eps) == (0.2, 0.2, 0.01, 1e-4)
    assert cfg.grpo.aggregation == "seq-mean-token-mean"
    assert (cfg.learner.lr, cfg.learner.weight_decay, cfg.learner.grad_clip) == (1e-6, 0.01, 1.0)
    assert cfg.trainer.prompts_per_round * cfg.rollout.n // cfg.trainer.steps_per_round == 256
    assert (cfg.data.fps, cfg.data.min_frames, cfg.data.max_frames, cfg.data.total_pixels_tokens) == (2.0, 4, 256, 4096)
    assert cfg.reward.timeout_s == 5.0 and cfg.sync.timeout_s == 300.0


def test_dotted_overrides_are_typed():
    cfg = load_config(None, ["trainer.total_rounds=20", "grpo.kl_coef=0", "rollout.backend=hf"])
    assert cfg.trainer.total_rounds == 20 and cfg.grpo.kl_coef == 0.0 and cfg.rollout.backend == "hf"


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["trainer.total_rounds=-3"])
    assert "trainer.total_rounds" in str(err.value) and "-3" in str(err.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["learner.lr=fast"])
    assert "learner.lr" in str(err.value) and "fast" in str(err.value)


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["trainer.totl_rounds=3"])
    assert "unknown config key 'trainer.totl_rounds'" in str(err.value)


def test_bad_literal_names_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["infer.mode=sometimes"])
    assert "infer.mode" in str(err.value) and "sometimes" in str(err.value) and "always-think" in str(err.value)


def test_schedule_must_divide():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["trainer.prompts_per_round=3", "rollout.n=5", "trainer.steps_per_round=4"])
    assert "steps_per_round" in str(err.value)


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["trainer.total_rounds"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError):
        load_config(scalar)


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_presets_load_and_round_trip(preset, tmp_path):
    cfg = load_config(CONFIGS / preset)
    dumped = tmp_path / "dump.yaml"
    dumped.write_text(to_yaml(cfg))
    assert load_config(dumped) == cfg
