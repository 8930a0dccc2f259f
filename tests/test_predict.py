"""merits predict: a trained run replayed on new data reproduces the run's own predictions, transcribes recordings
that have no text, and fails clearly on input it cannot use."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from merits.cli import main
from merits.data import load_manifest_or_corpus
from merits.data.manifest import Manifest
from merits.errors import ConfigError, DataError
from merits.predict import TrainedRun, predict_run

STAGES = ("stage1_audio", "stage2_audio", "stage1_text", "stage2_text", "stage3")  # the IEMOCAP graph, in order

FIXTURE = Path(__file__).parent / "fixtures" / "asr" / "both.wav"
FOX, SUNNY = (0.0, 4.038), (5.038, 9.422)  # seconds of the two sentences in the espeak-ng clip


def test_replaying_the_run_reproduces_every_stage(iemocap_run, tmp_path, capsys):
    """Predicting the run's own manifest gives, stage by stage, the labels the run wrote while training, and the
    same test scores: the chain of checkpoints is exactly the trained hierarchy."""
    _, _, root = iemocap_run
    out = tmp_path / "replay"
    assert main(["-q", "predict", str(root), str(root / "manifest"), "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "Audio+Text III" in shown and "| anger |" in shown and "weighted F1" in shown and "| conversation | turn |" in shown
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"] == list(STAGES) and summary["stage"] == "stage3" and not summary["left_out"]
    for stage in STAGES:
        trained = pd.read_csv(root / stage / "seed-0" / "predictions.csv").set_index("utterance_id")["predicted"]
        replayed = table.set_index("utterance_id")[f"predicted_{stage}"]
        agree = (replayed == trained.reindex(replayed.index)).mean()
        assert agree >= 0.99, f"{stage}: only {agree:.1%} of the replayed labels match the trained run"
        metrics = json.loads((root / stage / "seed-0" / "metrics.json").read_text())
        assert summary["scores"][stage]["test"]["weighted_f1"] == pytest.approx(metrics["test"]["weighted_f1"], abs=0.02)
    probs = table[[f"p_{n}" for n in ("anger", "happiness", "sadness", "neutral")]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    assert (table["predicted"] == table["predicted_stage3"]).all()
    assert np.allclose(table["confidence"], probs.max(1), atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())  # gold labels: full scores and the confusion matrices
    assert metrics["stage3"]["test"]["per_class"].keys() == {"anger", "happiness", "sadness", "neutral"}
    assert {"confusion_train.png", "confusion_validation.png", "confusion_test.png"} <= {p.name for p in out.iterdir()}


def test_online_sees_only_the_turns_so_far(iemocap_run, tmp_path):
    """--online: a turn's prediction equals the whole-conversation prediction on the conversation cut after that
    turn (later turns change nothing), and the last turn's equals the offline one."""
    _, _, root = iemocap_run
    run = TrainedRun.open(root)
    saved = Manifest.load(root / "manifest")
    t = saved.split("test").reset_index(drop=True)
    conv = t.groupby("conversation_id")["turn"].count().idxmax()
    t = t[t["conversation_id"] == conv].sort_values("turn").reset_index(drop=True)
    p = [f"p_{n}" for n in saved.labels]
    online = predict_run(run, Manifest("x", saved.labels, t), tmp_path / "online", online=True).table.set_index("utterance_id")
    offline = predict_run(run, Manifest("x", saved.labels, t), tmp_path / "offline").table.set_index("utterance_id")
    for k in (0, 1, len(t) // 2):
        cut = predict_run(run, Manifest("x", saved.labels, t.iloc[:k + 1]), tmp_path / f"cut{k}").table.set_index("utterance_id")
        u = t.at[k, "utterance_id"]
        assert np.abs(online.loc[u, p].to_numpy(float) - cut.loc[u, p].to_numpy(float)).max() < 2e-4
    u = t["utterance_id"].iloc[-1]
    assert np.abs(online.loc[u, p].to_numpy(float) - offline.loc[u, p].to_numpy(float)).max() < 2e-4
    assert (online["predicted_stage1_text"] == offline["predicted_stage1_text"]).all()  # Stage I has no context
    assert len(t) >= 3 and not np.allclose(online[p].to_numpy(float), offline[p].to_numpy(float))
    # --window: each turn from its last W turns only; W >= the conversation is the whole prefix
    wide = predict_run(run, Manifest("x", saved.labels, t), tmp_path / "w", online=True, window=len(t))
    assert np.abs(wide.table.set_index("utterance_id")[p].to_numpy(float) - online[p].to_numpy(float)).max() < 2e-4
    one = predict_run(run, Manifest("x", saved.labels, t), tmp_path / "w1", online=True, window=1)
    assert one.summary["online_mode"] == "prefix replay, window 1 turns"
    alone = predict_run(run, Manifest("x", saved.labels, t.iloc[[1]]), tmp_path / "alone").table.set_index("utterance_id")
    u = t.at[1, "utterance_id"]
    assert np.abs(one.table.set_index("utterance_id").loc[u, p].to_numpy(float) - alone.loc[u, p].to_numpy(float)).max() < 2e-4


def _recordings(folder: Path) -> Path:
    """Two conversations of real speech cut from the espeak-ng clip, plus a file that is not audio."""
    audio, sr = sf.read(FIXTURE)
    cut = {name: audio[int(a * sr):int(b * sr)] for name, (a, b) in (("fox", FOX), ("sunny", SUNNY))}
    for conv, turns in (("call-1", ("fox", "sunny")), ("call-2", ("sunny",))):
        (folder / conv).mkdir(parents=True)
        for k, name in enumerate(turns, 1):
            sf.write(folder / conv / f"turn-{k}.wav", cut[name], sr)
    (folder / "call-1" / "notes.txt").write_text("not audio")
    return folder


def test_new_recordings_are_transcribed_then_predicted(iemocap_run, tmp_path):
    """A folder of recordings (no transcripts) through the whole audio + text hierarchy: Whisper fills the text."""
    _, _, root = iemocap_run
    folder = _recordings(tmp_path / "recordings")
    manifest = load_manifest_or_corpus(str(folder))
    assert manifest.excluded == {"not audio": 1} and len(manifest.table) == 3
    result = predict_run(TrainedRun.open(root), manifest, tmp_path / "out")
    t = result.table.set_index("utterance_id")
    assert list(t.index) == ["call-1/turn-1", "call-1/turn-2", "call-2/turn-1"]
    assert "fox" in t.loc["call-1/turn-1", "text"].lower() and "sunny" in t.loc["call-1/turn-2", "text"].lower()
    assert set(t["predicted"]) <= {"anger", "happiness", "sadness", "neutral"} and (t["confidence"] > 0.25).all()
    assert "label" not in t.columns and result.summary["scores"] == {} and not (tmp_path / "out" / "metrics.json").exists()
    assert (tmp_path / "out" / "asr" / "transcripts.jsonl").is_file()
    again = predict_run(TrainedRun.open(root), manifest, tmp_path / "out")  # transcripts and features reused
    assert again.table["predicted"].tolist() == result.table["predicted"].tolist()


def test_whole_calls_are_cut_into_utterances_by_whisper(iemocap_run, tmp_path, capsys):
    """--segment: each file is a whole conversation; Whisper's segments are its turns, for both branches."""
    _, _, root = iemocap_run
    (tmp_path / "calls").mkdir()
    shutil.copy(FIXTURE, tmp_path / "calls" / "monday.wav")
    out = tmp_path / "out"
    assert main(["-q", "predict", str(root), str(tmp_path / "calls"), "--segment", "--out", str(out)]) == 0
    assert "in 1 conversation," in capsys.readouterr().out
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(table) >= 2 and (table["conversation_id"] == "calls/monday").all()
    assert list(table["turn"]) == list(range(len(table))) and table["utterance_id"].iloc[0] == "calls/monday/000"
    assert "lazy" in table["text"].iloc[0].lower() and "sunny" in table["text"].iloc[-1].lower()
    assert table["start"].iloc[-1] >= 4.0 and (table["end"] > table["start"]).all()  # when in the call each one was said
    assert (table["predicted_stage1_audio"] != "").all() and (table["predicted"] != "").all()
    per_call = pd.read_csv(out / "conversations.csv")  # the call at a glance
    assert len(per_call) == 1 and per_call.loc[0, "utterances"] == len(table)
    counts = table["predicted"].value_counts()
    assert per_call.loc[0, "dominant"] in counts.index[counts == counts.max()]
    shares = per_call[[f"share_{n}" for n in ("anger", "happiness", "sadness", "neutral")]].to_numpy()
    assert abs(shares.sum() - 1) < 1e-3 and per_call.loc[0, "last"] == table["predicted"].iloc[-1]
    assert (out / "timelines.png").stat().st_size > 0


def test_text_only_input_and_errors(iemocap_run, tmp_path, capsys, monkeypatch):
    _, _, root = iemocap_run
    run = TrainedRun.open(root)
    data = tmp_path / "new.csv"
    pd.DataFrame({"conversation_id": ["a", "a", "b"], "text": ["I am so angry!", "Calm down.", "What a lovely day"],
                  "label": ["anger", "", "happiness"]}).to_csv(data, index=False)
    # no split column: every row is to predict; gold labels where given are scored
    assert main(["-q", "predict", str(root), str(data), "--stage", "stage2_text", "--out", str(tmp_path / "t")]) == 0
    table = pd.read_csv(tmp_path / "t" / "predictions.csv", keep_default_na=False)
    assert len(table) == 3 and "predicted_stage1_text" in table and "predicted_stage2_audio" not in table
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["scores"]["stage2_text"]["test"]["n"] == 2
    # the run's final stage needs audio that a text file lacks: told what to do instead
    assert main(["-q", "predict", str(root), str(data), "--out", str(tmp_path / "x")]) == 2
    assert "for text alone use stage stage2_text" in capsys.readouterr().err
    # a gold label the run does not know, a seed it did not train, a directory that is no run
    pd.DataFrame({"conversation_id": ["a"], "text": ["hi"], "label": ["joy"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["-q", "predict", str(root), str(tmp_path / "bad.csv"), "--stage", "stage1_text",
                 "--out", str(tmp_path / "y")]) == 2
    assert "joy" in capsys.readouterr().err
    # ... that a label map renames (another corpus' names scored against the run's classes), recorded in the output
    assert main(["-q", "predict", str(root), str(tmp_path / "bad.csv"), "--stage", "stage1_text",
                 "--out", str(tmp_path / "mapped"), "-o", "label_map=joy:happiness"]) == 0
    mapped = json.loads((tmp_path / "mapped" / "summary.json").read_text())
    assert mapped["scores"]["stage1_text"]["test"]["n"] == 1 and mapped["label_map"] == {"joy": "happiness"}
    with pytest.raises(ConfigError, match=r"no finished stage1_\w+ for seed 7 \(finished seeds: \[0\]\)"):
        predict_run(run, load_manifest_or_corpus(str(data), split="test"), tmp_path / "z", seeds=7)
    with pytest.raises(ConfigError, match="not a trained experiment"):
        TrainedRun.open(tmp_path)
    with pytest.raises(ConfigError, match="unknown stage"):
        run.graph.chain("stage4")
    # a corrupt recording stops with the utterance and file named
    folder = _recordings(tmp_path / "rec")
    (folder / "call-2" / "turn-2.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="call-2/turn-2.*turn-2.wav"):
        predict_run(run, load_manifest_or_corpus(str(folder)), tmp_path / "c")
    run.cfg.audio.on_error = "skip"  # a run trained to skip bad audio leaves it out of prediction too, and says so
    skipped = predict_run(run, load_manifest_or_corpus(str(folder)), tmp_path / "c")
    assert skipped.summary["left_out"] == ["call-2/turn-2"] and skipped.summary["predicted"] == 3
    assert "call-2/turn-2" in skipped.summary["notes"][0]
    run.cfg.audio.on_error = "stop"
    # Whisper hears no words: the text branch cannot run, and the user is told which utterances and what to do
    from merits.asr import Transcriber

    folder.joinpath("call-2", "turn-2.wav").unlink()
    monkeypatch.setattr(Transcriber, "transcribe_batch", lambda self, audios: [""] * len(audios))
    with pytest.raises(DataError, match=r"Whisper found no words in 3 utterances .*prediction: stage stage2_audio"):
        predict_run(run, load_manifest_or_corpus(str(folder)), tmp_path / "e")


def test_conversation_shares_and_ties_are_never_misleading():
    """A tied dominant label is named as a tie and broken by confidence, not by class order; a share of 1 in
    2,405 prints as "< 0.1 %", not "0.0 %"."""
    from merits.prediction_report import conversations, format_summary, percent

    table = pd.DataFrame({"conversation_id": ["a"] * 4, "turn": range(4),
                          "predicted": ["anger", "joy", "joy", "anger"], "confidence": [0.9, 0.4, 0.5, 0.8]})
    row = conversations(table, ("anger", "joy")).iloc[0]
    assert row["dominant"] == "anger" and row["tied"] == "anger, joy"  # 1.7 total confidence against 0.9
    assert conversations(table.assign(conversation_id="b").iloc[1:3], ("anger", "joy")).iloc[0]["tied"] == ""
    assert percent(1, 2405) == "< 0.1 %" and percent(2404, 2405) == "> 99.9 %" and percent(1, 4) == "25.0 %"
    assert percent(0, 5) == "0.0 %"
    summary = {"conversations": 1, "stage_labels": {"s": "Text I"}, "predicted": 2405, "utterances": 2405,
               "stage": "s", "run": "r", "seeds": [0], "predicted_counts": {"joy": 2404, "anger": 1}, "scores": {},
               "left_out": []}
    assert "| anger | 1 | < 0.1 % |" in format_summary(summary)
