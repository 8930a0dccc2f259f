from pathlib import Path

import pytest

from merits.config import config_hash, parse_overrides
from merits.experiment import load_experiment
from merits.experiment import ExperimentConfig
from merits.errors import ConfigError

# teach-*.yaml are TeachConfig profiles (checked in test_teachers.py); the rest are experiments.
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "src" / "merits" / "configs").glob("*.yaml")
                 if not p.stem.startswith("teach-"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"offline", "meld", "iemocap", "mosi"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    cfg = load_experiment(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.seeds and cfg.stage1_text.epochs >= 1
    # a paper profile names the paper's encoder; an offline profile a packaged one (the base tier: MPNet)
    if "offline-base" in path.stem:
        assert cfg.text_encoder.model == "all-mpnet-base-v2"
    elif "offline" in path.stem:
        assert cfg.text_encoder.model == "all-MiniLM-L6-v2"
    else:
        assert cfg.text_encoder.model == "roberta-large"


def test_overrides_apply_and_are_typed():
    cfg = load_experiment("offline", ["stage1_text.epochs=2", "seeds=[3, 4]", "stage1_text.lr=1e-4",
                                      "data.options.strict_counts=false", "data.max_conversations=5"])
    assert cfg.stage1_text.epochs == 2 and cfg.seeds == [3, 4]
    assert cfg.stage1_text.lr == pytest.approx(1e-4)
    assert cfg.data.options == {"strict_counts": False} and cfg.data.max_conversations == 5
    assert cfg.text_encoder.model == "all-MiniLM-L6-v2"  # untouched keys keep the profile's value


def test_int_is_accepted_for_float():
    assert load_experiment(None, ["stage1_text.lr=1"]).stage1_text.lr == 1.0


@pytest.mark.parametrize("override, message", [
    ("stage1_text.epochz=2", "epochz"),
    ("stage1_text.epochs=two", "stage1_text.epochs"),
    ("seeds=[]", "seeds"),
    ("data.corpus=nope", "data.corpus"),
    ("text_encoder.pooling=max", "pooling"),
    ("stage1_text.epochs=0", "stage1_text.epochs"),
    ("epochs", "key=value"),
    ("combined=true", "combined"),  # the ablation fuses two modalities; the default has text only
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment("offline", [override])


def test_missing_config_lists_profiles():
    with pytest.raises(ConfigError, match="offline"):
        load_experiment("no-such-profile")


def test_hash_changes_with_config_only():
    a, b = load_experiment("offline"), load_experiment("offline")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_experiment("offline", ["stage2_text.model.hidden=32"]))
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_the_config_reference_page_matches_the_code():
    """docs/config.md is generated from the config dataclasses (python -m merits.config_reference): it lists every
    key with its default and a meaning, and a change to a config that is not regenerated fails here."""
    from merits.config_reference import COMMANDS, _load, reference_markdown, rows

    page = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    assert page == reference_markdown(), "regenerate: python -m merits.config_reference > docs/config.md"
    for _, _, path in COMMANDS:
        table = rows(_load(path))
        assert table and all(meaning for *_, meaning in table), [k for k, *_, m in table if not m]
    assert "| `data.unlabelled` | str | `context` |" in page and "| `custom` | `label_map` | `null` |" in page


def test_the_context_profiles_read_the_window_chosen_on_validation():
    for name in ("offline-context", "offline-base-context"):
        context = load_experiment(name).stage1_text.context
        assert (context.past, context.future, context.speakers, context.max_tokens) == (3, 1, True, 128)
    assert load_experiment("offline").stage1_text.context.past == 0  # the paper's utterance-only Stage I stays default
