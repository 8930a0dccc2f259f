"""Faults a careful user meets (issue 11): damaged files, odd encodings, control characters, truncated audio. Each
becomes a named error (``error: ...`` naming the file and what to do), never a traceback or a silent wrong result."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from merits.audio import AudioConfig, AudioError, load_audio
from merits.cli import main
from merits.data import prepare
from merits.errors import DamagedFileError, DataError
from merits.models.checkpoint import load_model, save_model
from merits.models.context import ConversationModel, ConversationModelConfig
from merits.runs import load_embeddings, save_embeddings

CSV = "conversation_id,turn,split,text,label\nc1,0,train,Café au lait – sí,joy\nc1,1,train,fine,neutral\n"


def test_encodings_are_detected_or_named(tmp_path):
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes(CSV.encode("utf-16"))  # with its byte-order mark, as Excel writes "Unicode text"
    assert prepare("custom", utf16).table["text"][0] == "Café au lait – sí"
    cp = tmp_path / "cp1252.csv"
    cp.write_bytes(CSV.encode("cp1252"))
    with pytest.raises(DataError, match=r"cp1252.csv: line 2 is not valid utf-8-sig .*option encoding"):
        prepare("custom", cp)
    assert prepare("custom", cp, encoding="cp1252").table["text"][0] == "Café au lait – sí"
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_bytes(json.dumps({"conversation_id": "c", "split": "train", "text": "Olá"}, ensure_ascii=False)
                      .encode("latin-1"))
    assert main(["-q", "prepare", "custom", "--root", str(jsonl)]) == 2


def test_a_control_character_in_a_label_is_named(tmp_path):
    bad = tmp_path / "nul.csv"
    bad.write_text(CSV.replace("neutral", "neutral\x00"))
    with pytest.raises(DataError, match=r"control characters.*c1_1 \('neutral\\x00'\)"):
        prepare("custom", bad)


def test_a_truncated_wav_is_named(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros(32000, np.float32), 16000, subtype="PCM_16")  # 2.0 s
    data = path.read_bytes()
    path.write_bytes(data[:44 + (len(data) - 44) // 3])  # a third of the samples, the header unchanged
    with pytest.raises(AudioError, match=r"truncated: the header declares 2.000 s of audio, the file holds 0.66"):
        load_audio(path)
    # through feature extraction: stop names it; skip leaves it out and reports it
    from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
    from merits.features import extract_features

    good = tmp_path / "good.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    table = tmp_path / "a.csv"
    pd.DataFrame({"conversation_id": ["c", "c"], "turn": [0, 1], "split": "train", "text": "",
                  "audio_path": [str(good), str(path)]}).to_csv(table, index=False)
    manifest = prepare("custom", table)
    encoder = build_speech_encoder(SpeechEncoderConfig(kind="opensmile"))
    with pytest.raises(DataError, match="truncated"):
        extract_features(manifest, encoder, tmp_path / "cache", AudioConfig(on_error="stop"))
    store = extract_features(manifest, encoder, tmp_path / "cache2", AudioConfig(on_error="skip"))
    assert store.skipped and "truncated" in next(iter(store.skipped.values()))


def test_damaged_checkpoints_and_embeddings_are_named(tmp_path):
    model = ConversationModel(ConversationModelConfig(input_dim=4, num_classes=2, hidden=4, heads=2))
    save_model(model, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    with pytest.raises(DamagedFileError, match="model.safetensors is damaged"):
        load_model(ConversationModel, ConversationModelConfig, tmp_path / "ckpt")
    save_model(model, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model_config.json").write_text('{"class": "ConversationModel", "config": {"input_di')
    with pytest.raises(DamagedFileError, match="model_config.json is damaged"):
        load_model(ConversationModel, ConversationModelConfig, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model_config.json").write_text('{"class": "ConversationModel", "config": {"hidden": "x"}}')
    with pytest.raises(DamagedFileError):
        load_model(ConversationModel, ConversationModelConfig, tmp_path / "ckpt")
    save_embeddings(tmp_path / "e.safetensors", ["a", "b"], np.zeros((2, 3), np.float32))
    (tmp_path / "e.safetensors").write_bytes((tmp_path / "e.safetensors").read_bytes()[:40])
    with pytest.raises(DamagedFileError, match="e.safetensors is damaged"):
        load_embeddings(tmp_path / "e.safetensors")


def test_a_truncated_finished_feature_cache_is_rebuilt(tmp_path):
    from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
    from merits.features import extract_features

    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    table = tmp_path / "a.csv"
    pd.DataFrame({"conversation_id": ["c"], "turn": [0], "split": "train", "text": "", "audio_path": [str(wav)]}
                 ).to_csv(table, index=False)
    manifest = prepare("custom", table)
    encoder = build_speech_encoder(SpeechEncoderConfig(kind="opensmile"))
    first = extract_features(manifest, encoder, tmp_path / "cache").get(["c_0"]).copy()
    features = next((tmp_path / "cache").rglob("features.npy"))
    features.write_bytes(features.read_bytes()[:150])  # finished, then truncated
    again = extract_features(manifest, encoder, tmp_path / "cache")
    assert np.allclose(again.get(["c_0"]), first)


def test_cli_shows_no_traceback_for_a_damaged_run(tmp_path, capsys, tiny_encoder):
    """A run whose checkpoint was truncated: predict says which file and what to do; --debug shows the traceback."""
    from merits.experiment import load_experiment
    from merits.pipeline import run_experiment

    cfg = load_experiment("offline", ["data.max_conversations=2", "data.options.strict_counts=false", "stage1_text.epochs=1",
                                      "stage2_text.epochs=1", "seeds=[0]", f"text_encoder.model={tiny_encoder}",
                                      f"runs_dir={tmp_path / 'runs'}", "name=d"])
    run_experiment(cfg)
    weights = tmp_path / "runs" / "d" / "stage2_text" / "seed-0" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    data = tmp_path / "new.csv"
    pd.DataFrame({"conversation_id": ["a"], "text": ["hello there"]}).to_csv(data, index=False)
    assert main(["-q", "predict", str(tmp_path / "runs" / "d"), str(data), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors is damaged" in err and "Traceback" not in err
    with pytest.raises(DamagedFileError):
        main(["-q", "--debug", "predict", str(tmp_path / "runs" / "d"), str(data), "--out", str(tmp_path / "p")])
    # a rerun of training sees the damage (the size recorded in done.json) and recomputes the stage
    run_experiment(cfg)
    assert main(["-q", "predict", str(tmp_path / "runs" / "d"), str(data), "--out", str(tmp_path / "p")]) == 0
    # the checkpoints' class names are the truth: a reordered list in the run's manifest is an error, not relabelling
    meta = tmp_path / "runs" / "d" / "manifest" / "manifest.json"
    m = json.loads(meta.read_text())
    meta.write_text(json.dumps({**m, "labels": m["labels"][::-1]}))
    assert main(["-q", "predict", str(tmp_path / "runs" / "d"), str(data), "--out", str(tmp_path / "p")]) == 2
    assert "was trained on the classes" in capsys.readouterr().err
    # `merits report RUN | head -1`: the reader leaves early; no traceback, exit 0
    import subprocess
    import sys

    done = subprocess.run(f"{sys.executable} -m merits report {tmp_path / 'runs' / 'd'} | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("| Modality") and "Traceback" not in done.stderr and "error" not in done.stderr
