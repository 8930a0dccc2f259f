"""One runtime per process, one path for training and replay: the device asked for reaches every component (a
second device faked on CPU), and a run replayed by ``merits predict`` gives the numbers its training exported, in
fp32 and in bf16 (the precision is read back from stage.json, not assumed)."""

import json

import numpy as np
import pytest
import torch

from merits.runtime import Runtime, resolve_device


def test_resolve_device_keeps_the_index():
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cpu", 1)).index == 1
    assert resolve_device(None) == resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert Runtime.create("cpu:1").device == torch.device("cpu", 1)


def _spy_on_placement(monkeypatch) -> list:
    """Every ``Module.to(device)`` call: (module class, the device asked for, as torch names it)."""
    seen = []
    real = torch.nn.Module.to

    def to(self, *args, **kwargs):
        where = kwargs.get("device", args[0] if args else None)
        if isinstance(where, (str, torch.device)):
            seen.append((type(self).__name__, str(torch.device(where))))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    return seen


def test_every_component_lands_on_the_device_asked_for(tmp_path, tiny_encoder, tiny_wavlm, monkeypatch):
    """``device=cpu:1`` stands for a second GPU: torch keeps the index in the device, so a component handed only the
    device's type (the old bug: stages on cuda:1, the speech encoder on cuda:0) is seen asking for plain ``cpu``.
    Training (Text and Audio I, II, III; the speech encoder extracting features) and prediction (every stage, the
    speech encoder) must all ask for cpu:1."""
    from fixtures_iemocap import write_iemocap_release

    from merits.data.manifest import Manifest
    from merits.experiment import load_experiment
    from merits.pipeline import run_experiment
    from merits.predict import Predictor, TrainedRun

    release = write_iemocap_release(tmp_path / "data", sessions=(1, 4, 5), dialogs_per_session=1,
                                    utterances_per_dialog=4)
    cfg = load_experiment("iemocap", [
        f"data.root={release}", "data.options.strict_counts=false", f"text_encoder.model={tiny_encoder}",
        f"speech_encoder.model={tiny_wavlm}", "stage1_text.epochs=1", "stage2_text.epochs=1", "stage1_audio.epochs=1",
        "stage2_audio.epochs=1", "stage3.epochs=1", "seeds=[0]", "device=cpu:1", f"runs_dir={tmp_path / 'runs'}",
        f"cache_dir={tmp_path / 'cache'}", "name=dev"])
    seen = _spy_on_placement(monkeypatch)
    run_experiment(cfg)
    trained = set(seen)
    assert {"TextClassifier", "SpeechHead", "ConversationModel", "CoAttentionFusion"} <= {m for m, _ in trained}
    assert any(m.startswith("WavLM") for m, _ in trained)  # the speech encoder extracting the features
    assert {d for _, d in trained} == {"cpu:1"}, sorted(trained)
    seen.clear()
    run = TrainedRun.open(tmp_path / "runs" / "dev")
    predictor = Predictor(run, device="cpu:1")
    manifest = Manifest.load(run.directory / "manifest")
    predictor.predict(manifest.select(manifest.split("test")["utterance_id"]), tmp_path / "p")
    assert predictor.speech_encoder().device == torch.device("cpu", 1)
    assert {"TextClassifier", "SpeechHead", "ConversationModel", "CoAttentionFusion"} <= {m for m, _ in seen}
    assert {d for _, d in seen} == {"cpu:1"}, sorted(set(seen))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_replay_equals_training_in_its_precision(tmp_path, tiny_encoder, precision):
    """A run trained (and exported) in ``precision`` and replayed by the Predictor on its own manifest gives the
    logits its training exported for every utterance and stage, to 1e-6, because the replay reads its precision and
    batches from stage.json (before, a bf16 Stage I was replayed in fp32)."""
    from merits.data.manifest import Manifest
    from merits.experiment import load_experiment
    from merits.pipeline import run_experiment
    from merits.predict import Predictor, TrainedRun
    from merits.runs import load_embeddings

    cfg = load_experiment("offline", [
        "data.max_conversations=3", "data.options.strict_counts=false", f"text_encoder.model={tiny_encoder}",
        "stage1_text.epochs=1", "stage2_text.epochs=1", f"stage1_text.precision={precision}",
        f"stage2_text.precision={precision}", "seeds=[0]", f"runs_dir={tmp_path}", "name=r"])
    run_experiment(cfg)
    run = TrainedRun.open(tmp_path / "r")
    stage = json.loads((run.directory / "stage1_text" / "seed-0" / "checkpoint" / "stage.json").read_text())
    assert stage["replay"]["precision"] == precision
    predictor = Predictor(run)
    assert all(info.replay.precision == precision for info in predictor.loaded[0].values())
    manifest = Manifest.load(run.directory / "manifest")
    result = predictor.predict(manifest, tmp_path / "p")
    for name in ("stage1_text", "stage2_text"):
        ids, arrays = load_embeddings(run.directory / name / "seed-0" / "embeddings.safetensors")
        exported = torch.softmax(torch.from_numpy(arrays["logits"]).double(), -1).numpy()
        out = result.stages[name]
        row = {u: i for i, u in enumerate(out.utterance_ids)}
        replayed = out.probs[[row[u] for u in ids]]
        assert np.abs(replayed - exported).max() < 1e-6, name
