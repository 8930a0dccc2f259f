"""merits export, merits.load: a trained run as a self-contained model folder, used from the CLI and from Python
with the same predictions as the run folder itself."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml

import merits
from merits.cli import main
from merits.errors import ConfigError, DamagedFileError, DataError

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def exported(iemocap_run, tmp_path_factory):
    _, _, root = iemocap_run
    out = tmp_path_factory.mktemp("export") / "iemocap-model"
    assert main(["-q", "export", str(root), str(out)]) == 0
    return root, out


def test_the_folder_holds_only_what_replay_needs_and_a_model_card(exported):
    root, out = exported
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"config.yaml", "manifest/manifest.json", "model_card.md", "LICENSE", "merits-export.json"} <= files
    assert not any(f.endswith("embeddings.safetensors") or "features" in f or ".locks" in f for f in files)
    assert "stage1_text/seed-0/checkpoint/encoder/config.json" in files  # a Hugging Face folder of its own
    assert "source" not in json.loads((out / "manifest" / "manifest.json").read_text())  # no trainer's paths
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert size(out) < size(root)
    card = (out / "model_card.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["labels"] == ["anger", "happiness", "sadness", "neutral"] and meta["library_name"] == "merits"
    assert meta["datasets"] == ["iemocap"] and meta["model-index"][0]["results"][0]["metrics"]
    for section in ("## What it is", "## How it was trained", "## How to use", "## Limits", "## Licence"):
        assert section in card
    from transformers import AutoModel, AutoTokenizer  # the encoder loads without merits

    encoder = out / "stage1_text" / "seed-0" / "checkpoint" / "encoder"
    tokens = AutoTokenizer.from_pretrained(encoder)("I see.", return_tensors="pt")
    assert AutoModel.from_pretrained(encoder)(**tokens).last_hidden_state.shape[0] == 1
    assert "AutoModel.from_pretrained" in card
    listing = json.loads((out / "merits-export.json").read_text())
    assert listing["seeds"] == [0] and listing["stage"] == "stage3"
    assert all(len(f["sha256"]) == 64 for f in listing["files"].values())


def test_predict_reads_an_exported_folder_like_the_run(exported, tmp_path):
    root, out = exported
    for name, folder in (("run", root), ("export", out)):
        assert main(["-q", "predict", str(folder), str(root / "manifest"), "--out", str(tmp_path / name)]) == 0
    a, b = (pd.read_csv(tmp_path / n / "predictions.csv") for n in ("run", "export"))
    pd.testing.assert_frame_equal(a, b)


def test_a_damaged_export_is_a_named_error(exported, tmp_path, capsys):
    import shutil

    _, out = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    head = copy / "stage2_text" / "seed-0" / "checkpoint" / "model.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 1  # one flipped bit: same size, other bytes
    head.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match="stage2_text/seed-0/checkpoint/model.safetensors does not hold"):
        merits.load(copy)
    head.unlink()
    assert main(["-q", "predict", str(copy), "x.csv", "--out", str(tmp_path / "p")]) == 2
    assert "model.safetensors is missing: export the model again" in capsys.readouterr().err


def test_export_refuses_what_it_cannot_stand_for(exported, tmp_path):
    from merits.export import export_run

    root, out = exported
    with pytest.raises(ConfigError, match="already an exported model folder"):
        export_run(out, tmp_path / "again")
    with pytest.raises(ConfigError, match="inside the run"):
        export_run(root, root / "model")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an exported model folder"):
        export_run(root, tmp_path / "busy")
    with pytest.raises(ConfigError, match=r"no finished stage1_\w+ for seed 7 \(finished seeds: \[0\]\)"):
        export_run(root, tmp_path / "m", seeds=[7])


def test_the_python_api_on_strings_dicts_frames_arrays_and_live_turns(exported):
    root, out = exported
    text = merits.load(out, device="cpu", stage="stage2_text")
    assert "Text I -> Text II" in repr(text) and text.labels == ("anger", "happiness", "sadness", "neutral")
    turns = ["I can't believe you did that.", "I'm sorry, I really am.", "Just go."]
    one = text.predict(turns)
    assert [t.text for t in one.turns] == turns and all(t.label in text.labels for t in one.turns)
    assert set(one.turns[0].stages) == {"stage1_text", "stage2_text"}
    assert abs(sum(one.turns[0].probabilities.values()) - 1) < 1e-3
    (conv,) = one.conversations
    assert conv.id == "conversation-0" and abs(sum(conv.shares.values()) - 1) < 1e-6 and conv.dominant in text.labels
    frame = text.predict(pd.DataFrame({"conversation_id": ["a", "a", "b"], "text": turns}))
    assert [c.id for c in frame.conversations] == ["a", "b"]
    assert list(frame.to_pandas()["predicted"][:2]) == list(text.predict(turns[:2]).to_pandas()["predicted"])
    many = text.predict([turns, [{"text": "Fine.", "speaker": "Ann"}]])
    assert len(many.conversations) == 2 and many.conversations[1].turns[0].speaker == "Ann"
    live = text.live("call")  # each turn from the turns so far: as predict(..., online=True) gives it
    online = text.predict(turns, online=True)
    for k, t in enumerate(turns):
        got = live.add(t)
        assert got.label == online.turns[k].label
        assert got.probabilities == pytest.approx(online.turns[k].probabilities, abs=1e-4)
    with pytest.raises(DataError, match="unknown keys"):
        text.predict([{"txt": "typo"}])
    with pytest.raises(DataError, match="no turns"):
        text.predict([])
    # the whole model (speech too) with audio as an array and its sample rate
    wav = next(root.parent.parent.rglob("*.wav"))
    samples, rate = soundfile.read(wav, dtype="float32")
    full = merits.load(out, device="cpu")
    both = full.predict([{"text": "Just go.", "audio": samples, "sample_rate": rate},
                         {"text": "Fine.", "audio": str(wav)}])
    assert both.turns[0].stages.keys() == {"stage1_text", "stage2_text", "stage1_audio", "stage2_audio", "stage3"}
    assert both.turns[0].probabilities == pytest.approx(both.turns[1].probabilities, abs=0.5)  # both predicted
    with pytest.raises(DataError, match="needs its sample_rate"):
        full.predict([{"text": "x", "audio": np.zeros(1600)}])


def test_the_documented_examples_run(exported):
    """docs/python.md's examples, as doctests, on the exported model."""
    _, out = exported
    failures, tried = doctest.testfile(str(DOCS / "python.md"), module_relative=False, globs={"MODEL": str(out)},
                                       optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried >= 5 and failures == 0


def test_serve_answers_from_an_exported_folder_as_from_the_run(exported, tmp_path):
    from fastapi.testclient import TestClient

    from merits.serve import ServeConfig, create_app

    root, out = exported
    body = {"conversations": [{"id": "c", "turns": ["You did what?", "I said I'm sorry."]}]}
    answers = []
    for name, folder in (("run", root), ("export", out)):
        cfg = ServeConfig(live_store=str(tmp_path / f"{name}.sqlite"), stage="stage2_text")
        with TestClient(create_app(folder, cfg), base_url="http://localhost") as client:
            answers.append(client.post("/v1/predict", json=body).json())
    run, export = answers
    assert run.pop("run") == "iemocap" and export.pop("run") == "iemocap-model"
    assert run == export


def test_predict_audio_cuts_a_whole_recording_with_whisper(exported):
    """model.predict_audio: the espeak-ng clip (two sentences) as one call, cut by Whisper, every stage run."""
    _, out = exported
    clip = Path(__file__).parent / "fixtures" / "asr" / "both.wav"
    result = merits.load(out, device="cpu").predict_audio(clip)
    (call,) = result.conversations
    assert call.id == "both" and len(call.turns) >= 2
    assert all(t.start is not None and t.end is not None and t.end > t.start for t in call.turns)
    assert "lazy" in call.turns[0].text.lower() and "stage3" in call.turns[0].stages
