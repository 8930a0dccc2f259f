"""The feature cache: hit, resume after an interruption (also a hard kill), key changes, bad-audio policy."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import soundfile as sf

from conftest import shared
from merits.audio import AudioConfig, AudioError
from merits.data.manifest import Manifest
from merits.encoders.speech import SpeechEncoder, SpeechEncoderConfig, build_speech_encoder
from merits.errors import DataError
from merits.features import FeatureStore, cache_key, extract_features



class Counting(SpeechEncoder):
    """A cheap encoder that records every utterance it encodes (by sample count) and can die after k calls."""

    name, num_layers, dim = "counting", 2, 3

    def __init__(self, tag: str = "v1", fail_after: int | None = None):
        self.tag, self.fail_after, self.calls = tag, fail_after, []

    def fingerprint(self) -> dict:
        return {"kind": "counting", "tag": self.tag}

    def encode(self, audio, sample_rate):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append(len(audio))
        return np.stack([np.full(3, audio.mean()), np.full(3, float(len(audio)))]).astype(np.float32)


def toy_manifest(tmp_path: Path, n: int = 6, bad: dict | None = None) -> Manifest:
    """n utterances with distinct lengths (0.2 s + 10 ms * i), the first conversations train, the rest test; ``bad``: index -> kind."""
    rows = []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        x = (0.3 * np.sin(np.arange(int(16000 * (0.2 + 0.01 * i))) * 0.05 * (i + 1))).astype(np.float32)
        kind = (bad or {}).get(i)
        if kind == "missing":
            path = tmp_path / f"absent{i}.wav"
        elif kind == "garbage":
            path.write_bytes(b"not audio at all" * 20)
        elif kind == "empty":
            sf.write(path, np.zeros(0, np.float32), 16000)
        elif kind == "zero":
            sf.write(path, np.zeros_like(x), 16000)
        elif kind == "nan":
            x[5] = np.nan
            sf.write(path, x, 16000, subtype="FLOAT")
        elif kind == "short":
            sf.write(path, x[:400], 16000)
        else:
            sf.write(path, x, 16000, subtype="FLOAT")
        rows.append({"utterance_id": f"u{i}", "conversation_id": f"c{i // 2}", "turn": i % 2,
                     "split": "train" if i // 2 < n // 4 else "test", "text": "", "label": "a",
                     "audio_path": str(path), "start": "", "end": ""})
    return Manifest("toy corpus", ("a", "b"), pd.DataFrame(rows))


def toy_audio_dir(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    return d


def test_extract_then_cache_hit_without_audio(tmp_path):
    manifest = toy_manifest(toy_audio_dir(tmp_path))
    enc = Counting()
    store = extract_features(manifest, enc, tmp_path / "cache", AudioConfig())
    assert len(enc.calls) == 6 and len(set(enc.calls)) == 6
    assert store.directory.parent.name == "toy_corpus" and store.directory.name.startswith("counting-")
    assert isinstance(store.array, np.memmap) and store.array.shape == (6, 2, 3)
    for name in ("features.npy", "utterance_ids.json", "done.npy", "meta.json", "skipped.csv"):
        assert (store.directory / name).is_file()
    assert json.loads((store.directory / "meta.json").read_text())["complete"] is True
    got = store.get(["u3", "u0"])
    assert got.shape == (2, 2, 3) and got[0, 1, 0] == pytest.approx(16000 * 0.23, abs=1)

    for wav in (tmp_path / "audio").glob("*.wav"):  # training on cached features never reads audio again
        wav.unlink()
    again = Counting()
    store2 = extract_features(manifest, again, tmp_path / "cache", AudioConfig())
    assert again.calls == [] and store2.directory == store.directory
    np.testing.assert_array_equal(FeatureStore(store.directory).get(["u3", "u0"]), got)
    with pytest.raises(DataError, match="no utterances"):
        store.get(["u99"])


def test_resume_after_interruption_extracts_nothing_twice(tmp_path):
    manifest = toy_manifest(toy_audio_dir(tmp_path), n=8)
    dying = Counting(fail_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(manifest, dying, tmp_path / "cache", AudioConfig(), batch_size=1)
    partial = FeatureStore(next((tmp_path / "cache").glob("*/*")))
    assert not partial.complete and int(partial.done.sum()) == 3

    resumed = Counting()
    store = extract_features(manifest, resumed, tmp_path / "cache", AudioConfig(), batch_size=1)
    assert len(resumed.calls) == 5
    assert sorted(dying.calls + resumed.calls) == sorted(set(dying.calls + resumed.calls))  # none twice
    assert store.complete and store.done.all()
    fresh = extract_features(manifest, Counting(), tmp_path / "other-cache", AudioConfig())
    np.testing.assert_array_equal(np.asarray(store.array), np.asarray(fresh.array))


def test_resume_after_a_hard_kill(tmp_path):
    """The process dies without cleanup (os._exit): work flushed before the kill is kept."""
    manifest = toy_manifest(toy_audio_dir(tmp_path), n=6)
    manifest.save(tmp_path / "manifest")
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np
        from merits import features
        from merits.audio import AudioConfig
        from merits.data.manifest import Manifest
        from test_features import Counting

        features.FLUSH_SECONDS = 0.0  # flush after every batch
        class Killed(Counting):
            def encode(self, audio, sr):
                if len(self.calls) == 4:
                    os._exit(3)
                return super().encode(audio, sr)
        features.extract_features(Manifest.load({str(tmp_path / "manifest")!r}), Killed(), {str(tmp_path / "cache")!r},
                                  AudioConfig(), batch_size=1)
    """)
    env = dict(os.environ, MERITS_QUIET="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    resumed = Counting()
    store = extract_features(Manifest.load(tmp_path / "manifest"), resumed, tmp_path / "cache", AudioConfig(), batch_size=1)
    assert len(resumed.calls) == 2 and store.done.all()


def test_key_changes_with_encoder_config_and_manifest_audio(tmp_path):
    manifest = toy_manifest(toy_audio_dir(tmp_path))
    cfg = AudioConfig()
    base = cache_key(manifest, Counting("v1"), cfg)
    assert cache_key(manifest, Counting("v1"), cfg) == base
    assert cache_key(manifest, Counting("v2"), cfg) != base
    assert cache_key(manifest, Counting("v1"), AudioConfig(min_seconds=0.2)) != base
    table = manifest.table.copy()
    table.loc[0, "end"] = 0.1
    assert cache_key(Manifest(manifest.corpus, manifest.labels, table), Counting("v1"), cfg) != base
    table = manifest.table.copy()
    table.loc[1, "audio_path"] = table.loc[1, "audio_path"] + ".moved.wav"
    assert cache_key(Manifest(manifest.corpus, manifest.labels, table), Counting("v1"), cfg) != base
    table = manifest.table.copy()
    table.loc[0, "text"] = "a transcript does not change audio features"
    assert cache_key(Manifest(manifest.corpus, manifest.labels, table), Counting("v1"), cfg) == base

    a = extract_features(manifest, Counting("v1"), tmp_path / "cache", cfg)
    b = extract_features(manifest, Counting("v2"), tmp_path / "cache", cfg)
    assert a.directory != b.directory


BAD = {1: "missing", 3: "garbage", 4: "empty", 5: "zero", 6: "nan", 7: "short"}


def test_policy_stop_raises_naming_the_utterance_and_keeps_work(tmp_path):
    manifest = toy_manifest(toy_audio_dir(tmp_path), n=8, bad={3: "garbage"})
    enc = Counting()
    with pytest.raises(AudioError, match=r"utterance 'u3': audio .*u3\.wav: cannot decode"):
        extract_features(manifest, enc, tmp_path / "cache", AudioConfig(on_error="stop"), batch_size=1)
    assert len(enc.calls) == 3
    partial = FeatureStore(next((tmp_path / "cache").glob("*/*")))
    assert partial.done.tolist()[:3] == [True] * 3


def test_policy_skip_writes_the_report_and_counts_test_utterances(tmp_path, caplog):
    manifest = toy_manifest(toy_audio_dir(tmp_path), n=10, bad=BAD)
    enc = Counting()
    with caplog.at_level("WARNING", logger="merits"):
        store = extract_features(manifest, enc, tmp_path / "cache", AudioConfig(on_error="skip"))
    assert len(enc.calls) == 4  # u0, u2, u8, u9
    report = pd.read_csv(store.directory / "skipped.csv", dtype=str)
    assert list(report.columns) == ["utterance_id", "split", "audio_path", "reason"]
    assert sorted(report["utterance_id"]) == sorted(f"u{i}" for i in BAD)
    reasons = dict(zip(report["utterance_id"], report["reason"]))
    assert reasons["u1"] == "file not found" and reasons["u3"].startswith("cannot decode")
    assert "empty" in reasons["u4"] and "all zeros" in reasons["u5"]
    assert "NaN" in reasons["u6"] and "too short" in reasons["u7"]
    assert dict(report.groupby("split").size()) == {"train": 2, "test": 4}
    assert set(store.skipped) == {f"u{i}" for i in BAD}
    assert store.available_ids == ["u0", "u2", "u8", "u9"]
    summary = store.summary()
    assert "left out 6 of 10 utterances (4 test" in summary and "skipped.csv" in summary
    assert "left out 6 of 10 utterances (4 test" in caplog.text
    with pytest.raises(DataError, match="u4: empty audio"):
        store.get(["u0", "u4"])

    again = Counting()  # a skip run reuses the cache: nothing is retried
    assert extract_features(manifest, again, tmp_path / "cache", AudioConfig(on_error="skip")).complete
    assert again.calls == []
    with pytest.raises(AudioError, match="utterance 'u1'"):  # stop retries what skip left out
        extract_features(manifest, Counting(), tmp_path / "cache", AudioConfig(on_error="stop"))


def test_precomputed_features_from_the_mosi_table(tmp_path):
    table_path = shared("mosi", "mosi_utterances.csv")
    ids = pd.read_csv(table_path, usecols=["utt_id"])["utt_id"].head(5).tolist()
    rows = [{"utterance_id": u, "conversation_id": "v", "turn": k, "split": "test", "text": "x", "label": "a"}
            for k, u in enumerate(ids)]
    manifest = Manifest("mosi", ("a", "b"), pd.DataFrame(rows))
    enc = build_speech_encoder(SpeechEncoderConfig(kind="precomputed", model=str(table_path)))
    store = extract_features(manifest, enc, tmp_path / "cache")
    assert store.array.shape == (5, 1, 73)
    np.testing.assert_array_equal(store.get([ids[2]])[0], enc.lookup(ids[2]))

    rows.append({"utterance_id": "not_in_table_1", "conversation_id": "v", "turn": 9, "split": "test",
                 "text": "x", "label": "a"})
    with pytest.raises(DataError, match="not_in_table_1"):
        extract_features(Manifest("mosi", ("a", "b"), pd.DataFrame(rows)), enc, tmp_path / "cache")


def test_opensmile_cache_on_real_clips(tmp_path):
    wav = shared("emodb", "wav")
    names = sorted(p.name for p in wav.glob("*.wav"))[:4]
    rows = [{"utterance_id": n[:-4], "conversation_id": n[:-4], "turn": 0, "split": "train", "text": "",
             "label": "a", "audio_path": str(wav / n), "start": 0.25, "end": 1.75} for n in names]
    manifest = Manifest("emodb", ("a",), pd.DataFrame(rows))
    store = extract_features(manifest, build_speech_encoder(SpeechEncoderConfig()), tmp_path / "cache")
    assert store.array.shape == (4, 1, 88) and np.isfinite(store.get(store.utterance_ids)).all()
    assert json.loads((store.directory / "meta.json").read_text())["encoder"]["feature_set"] == "eGeMAPSv02"


def test_padding_encoders_get_length_sorted_batches_of_their_size(tmp_path):
    """An encoder that pads a batch to its longest clip gets batches of its own batch_size, shortest clips first;
    the cache rows keep the manifest's order."""

    class Padding(Counting):
        pads_batches, batch_size = True, 2

        def __init__(self):
            super().__init__()
            self.batches = []

        def encode_batch(self, audios, sample_rate):
            self.batches.append([len(a) for a in audios])
            return super().encode_batch(audios, sample_rate)

    manifest = toy_manifest(toy_audio_dir(tmp_path), n=6)
    manifest = Manifest(manifest.corpus, manifest.labels, manifest.table.iloc[[3, 0, 5, 1, 4, 2]].reset_index(drop=True))
    enc = Padding()
    store = extract_features(manifest, enc, tmp_path / "cache", AudioConfig())
    lengths = [n for b in enc.batches for n in b]
    assert [len(b) for b in enc.batches] == [2, 2, 2] and lengths == sorted(lengths)
    for k, u in enumerate(store.utterance_ids):  # row k holds utterance u's own features (its length, layer 1)
        assert u == manifest.table["utterance_id"][k]
        assert store.get([u])[0, 1, 0] == pytest.approx(int(16000 * (0.2 + 0.01 * int(u[1:]))), abs=1)
