"""ASR with the packaged Whisper tiny.en on the espeak fixture: words, VAD, resume after a kill, skipping done work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from merits.asr import STORE, ASRConfig, Transcriber, TranscriptStore, transcribe_manifest, wer
from merits.config import load_config
from merits.experiment import load_experiment
from merits.data.manifest import Manifest
from merits.errors import ConfigError, DataError, ModelNotFoundError
from merits.data import load_manifest_or_corpus

ROOT = Path(__file__).resolve().parents[1]
WAV = ROOT / "tests" / "fixtures" / "asr" / "both.wav"  # made by tests/fixtures/asr/make_fixture.sh
FOX = "The quick brown fox jumps over the lazy dog."
SUN = "It is a lovely sunny day and I feel very happy today."


def rows(n_copies: int = 1) -> pd.DataFrame:
    """The two sentences cut out of one file by start/end, plus the near-silent second between them."""
    out = []
    for k in range(n_copies):
        out += [
            dict(utterance_id=f"fox{k}", conversation_id=f"c{k}", turn=0, split="train", text=FOX, label="",
                 audio_path=str(WAV), start=0.0, end=4.038),
            dict(utterance_id=f"sil{k}", conversation_id=f"c{k}", turn=1, split="train", text="", label="",
                 audio_path=str(WAV), start=4.1, end=4.9),
            dict(utterance_id=f"sun{k}", conversation_id=f"c{k}", turn=2, split="train", text=SUN, label="",
                 audio_path=str(WAV), start=5.038, end=9.42),
        ]
    return pd.DataFrame(out)


def manifest(n_copies: int = 1) -> Manifest:
    return Manifest("fixture", (), rows(n_copies)).validate()


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber(ASRConfig(threads=1, batch_size=4))


@pytest.fixture(scope="module")
def vad_transcriber():
    return Transcriber(ASRConfig(threads=1, batch_size=4, vad=True))


def counting(t: Transcriber) -> list:
    """Record the utterances of every model call."""
    calls: list = []
    original = t.transcribe_batch

    def wrapped(audios):
        calls.append(len(audios))
        return original(audios)

    t.transcribe_batch = wrapped
    return calls


def test_packaged_model_transcribes_the_fixture(tmp_path, transcriber):
    m = manifest()
    before = (m.table.copy(), m.fingerprint())
    result = transcribe_manifest(m, tmp_path / "out", transcriber.cfg, transcriber)
    text = dict(zip(result.manifest.table["utterance_id"], result.manifest.table["text"]))
    assert wer(FOX, text["fox0"]) <= 0.3 and wer(SUN, text["sun0"]) <= 0.3
    for word in ("quick", "fox", "lazy", "dog"):
        assert word in text["fox0"].lower()
    for word in ("sunny", "happy", "today"):
        assert word in text["sun0"].lower()
    # the input manifest is untouched; the output is saved and reloads to the same transcripts
    assert m.fingerprint() == before[1] and m.table.equals(before[0])
    again = Manifest.load(tmp_path / "out")
    assert dict(zip(again.table["utterance_id"], again.table["text"])) == text
    report = json.loads((tmp_path / "out" / "asr_report.json").read_text())
    assert report["wer_vs_input_text"]["wer"] <= 0.2 and report["wer_vs_input_text"]["utterances"] == 2
    assert report["run"]["rtf"] > 0 and report["audio_seconds"] == pytest.approx(4.038 + 0.8 + 4.382, abs=0.01)


def test_vad_drops_silence_and_reports_empty_transcripts(tmp_path, vad_transcriber):
    cfg = vad_transcriber.cfg
    result = transcribe_manifest(manifest(), tmp_path / "out", cfg, vad_transcriber)
    text = dict(zip(result.manifest.table["utterance_id"], result.manifest.table["text"]))
    assert "fox" in text["fox0"].lower() and "sunny" in text["sun0"].lower()
    assert text["sil0"] == ""  # without VAD Whisper hallucinates "Thank you." on this near-silence
    assert result.report["empty"] == {"count": 1, "ids": ["sil0"], "dropped": False}
    dropped = transcribe_manifest(manifest(), tmp_path / "out2", ASRConfig(**{**cfg.__dict__, "drop_empty": True}),
                                  vad_transcriber)
    assert "sil0" not in set(dropped.manifest.table["utterance_id"]) and len(dropped.manifest.table) == 2


def test_rerun_skips_done_utterances(tmp_path, transcriber):
    calls = counting(transcriber)
    try:
        transcribe_manifest(manifest(), tmp_path / "out", transcriber.cfg, transcriber)
        assert sum(calls) == 3
        calls.clear()
        again = transcribe_manifest(manifest(), tmp_path / "out", transcriber.cfg, transcriber)
        assert calls == [] and again.report["run"] == {**again.report["run"], "transcribed": 0, "reused": 3}
        # a changed cut makes that one stored transcript stale: only it is decoded again
        t = rows()
        t.loc[t["utterance_id"] == "sun0", "end"] = 9.3
        transcribe_manifest(Manifest("fixture", (), t), tmp_path / "out", transcriber.cfg, transcriber)
        assert calls == [1]
    finally:
        del transcriber.transcribe_batch


def test_other_settings_do_not_reuse_a_store(tmp_path, transcriber):
    transcribe_manifest(manifest(), tmp_path / "out", transcriber.cfg, transcriber)
    header = json.loads((tmp_path / "out" / STORE).read_text().splitlines()[0])
    with pytest.raises(ConfigError, match="other ASR settings.*beam_size"):
        TranscriptStore(tmp_path / "out" / STORE, {**header["header"], "beam_size": 1})


KILLED_RUN = """
import sys
from merits.asr import ASRConfig
from merits.data.manifest import Manifest
from merits.asr import transcribe_manifest
sys.path.insert(0, {tests!r})
from test_asr import manifest
transcribe_manifest(manifest(4), {out!r}, ASRConfig(threads=1, batch_size=1, beam_size=1))
"""


def test_resume_after_kill(tmp_path):
    """SIGKILL mid-run loses at most the utterance in flight; the rerun decodes only the rest."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(tests=str(ROOT / "tests"), out=str(out))], env=env)
    store = out / STORE
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if store.is_file() and len(store.read_bytes().splitlines()) >= 1 + 3:  # header + 3 records
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines = store.read_bytes().splitlines()
    done = len(lines) - 1
    assert 3 <= done < 12, f"the kill came too late or too early ({done} of 12 stored)"
    with open(store, "ab") as f:  # a record torn by the kill, as a kill during the write leaves it
        f.write(b'{"utterance_id": "sun3", "sta')

    cfg = ASRConfig(threads=1, batch_size=1, beam_size=1)
    t = Transcriber(cfg)
    calls = counting(t)
    result = transcribe_manifest(manifest(4), out, cfg, t)
    assert sum(calls) == 12 - done
    assert result.report["run"]["reused"] == done and result.report["transcribed"] == 12
    assert not store.read_bytes().endswith(b'"sta')
    assert all(json.loads(line) for line in store.read_text().splitlines())
    text = dict(zip(result.manifest.table["utterance_id"], result.manifest.table["text"]))
    assert all("lazy dog" in text[f"fox{k}"].lower() and "sunny" in text[f"sun{k}"] for k in range(4))


def test_bad_audio_stops_or_is_skipped_and_reported(tmp_path, transcriber):
    t = rows()
    t.loc[t["utterance_id"] == "sun0", "end"] = 99.0  # beyond the end of the file
    m = Manifest("fixture", (), t)
    with pytest.raises(DataError, match="sun0.*beyond the end"):
        transcribe_manifest(m, tmp_path / "stop", transcriber.cfg, transcriber)
    cfg = ASRConfig(**{**transcriber.cfg.__dict__, "audio": load_experiment(None, ["audio.on_error=skip"]).audio})
    result = transcribe_manifest(m, tmp_path / "skip", cfg, transcriber)
    assert [i["utterance_id"] for i in result.report["skipped"]["items"]] == ["sun0"]
    assert "sun0" not in set(result.manifest.table["utterance_id"])


def test_segment_mode_turns_a_whole_recording_into_a_conversation(tmp_path):
    """segment: the whole clip is one call; Whisper's segments become its utterances with start/end, resumably."""
    cfg = ASRConfig(threads=1, segment=True)
    t = Transcriber(cfg)
    calls = Manifest("calls", (), pd.DataFrame([
        dict(utterance_id="call", conversation_id="folder", turn=0, split="test", text="", label="", audio_path=str(WAV)),
        dict(utterance_id="late", conversation_id="folder", turn=1, split="test", text="", label="", audio_path=str(WAV),
             start=5.0, end=9.42),
        dict(utterance_id="typed", conversation_id="chat", turn=0, split="test", text="hello there", label=""),
    ])).validate()
    result = transcribe_manifest(calls, tmp_path / "out", cfg, t)
    out = result.manifest.table.set_index("utterance_id")
    call = out[out["conversation_id"] == "call"].sort_values("turn")
    assert len(call) >= 2 and list(call.index[:2]) == ["call/000", "call/001"] and list(call["turn"]) == list(range(len(call)))
    assert (call["start"].diff().dropna() > 0).all() and (call["end"] > call["start"]).all() and call["end"].max() <= 9.43
    first, last = call["text"].iloc[0].lower(), call["text"].iloc[-1].lower()
    assert "lazy" in first and "sunny" in last and "sunny" not in first
    assert call["start"].iloc[-1] >= 4.0 and call["end"].iloc[0] <= 5.1  # the second sentence starts after the pause
    late = out[out["conversation_id"] == "late"]  # segment times are seconds of the file, not of the cut
    assert len(late) >= 1 and late["start"].min() >= 5.0 and "sunny" in " ".join(late["text"]).lower()
    assert out.loc["typed", "text"] == "hello there" and out.loc["typed", "conversation_id"] == "chat"
    assert result.report["segments"] == len(call) + len(late)
    counting_calls = []
    t.segment = lambda audio: counting_calls.append(1) or []  # a rerun must not decode again
    again = transcribe_manifest(calls, tmp_path / "out", cfg, t)
    assert not counting_calls and again.manifest.table.equals(result.manifest.table)
    with pytest.raises(ConfigError, match="other ASR settings"):  # a store of plain transcripts is not reused
        transcribe_manifest(calls, tmp_path / "out", ASRConfig(threads=1))


def test_rows_without_audio_keep_their_text(tmp_path, transcriber):
    t = pd.concat([rows(), pd.DataFrame([dict(utterance_id="txt", conversation_id="t", turn=0, split="train",
                                              text="typed text", label="")])])
    result = transcribe_manifest(Manifest("fixture", (), t), tmp_path / "out", transcriber.cfg, transcriber)
    assert result.manifest.table.set_index("utterance_id").loc["txt", "text"] == "typed text"
    assert result.report["without_audio_kept_text"] == 1


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="large-v3"):
        Transcriber(ASRConfig(model="large-v3"))
    (tmp_path / "hf").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2"):
        Transcriber(ASRConfig(model=str(tmp_path / "hf")))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Transcriber(ASRConfig(model="/no/such/model"))


def test_asr_configs():
    cfg = load_config(ROOT / "src" / "merits" / "configs" / "asr" / "paper.yaml", ["batch_size=2"], cls=ASRConfig)
    assert cfg.model == "large-v3" and cfg.vad and cfg.batch_size == 2
    with pytest.raises(ConfigError, match="beam_size"):
        load_config(None, ["beam_size=0"], cls=ASRConfig)


def test_load_manifest_or_corpus(tmp_path):
    manifest().save(tmp_path / "m")
    assert len(load_manifest_or_corpus(str(tmp_path / "m")).table) == 3
    assert len(load_manifest_or_corpus(str(tmp_path / "m" / "manifest.csv")).table) == 3
    with pytest.raises(DataError, match="neither a corpus name .* nor a folder of recordings"):
        load_manifest_or_corpus("nosuchcorpus")


def test_cli_asr_and_wer(tmp_path, capsys):
    from merits.cli import main

    manifest().save(tmp_path / "in")
    assert main(["-q", "asr", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--threads", "1", "--vad",
                 "--batch-size", "4", "--beam-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "transcribed 3 utterances" in out and "empty transcripts: 1 (sil0)" in out
    assert main(["-q", "asr", str(tmp_path / "in"), "--out", str(tmp_path / "in")]) == 2  # never overwrite the input
    assert main(["-q", "wer", str(tmp_path / "in"), str(tmp_path / "out"), "--json", str(tmp_path / "w.json")]) == 0
    assert "in 21 reference words, 3 utterances" in capsys.readouterr().out
    assert json.loads((tmp_path / "w.json").read_text())["wer"] <= 0.3
    (tmp_path / "calls").mkdir()  # a folder of whole recordings, cut into utterances
    (tmp_path / "calls" / "monday.wav").write_bytes(WAV.read_bytes())
    assert main(["-q", "asr", str(tmp_path / "calls"), "--out", str(tmp_path / "seg"), "--segment", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "transcribed 1 recordings" in out and "cut into 2 utterances" in out
    assert list(Manifest.load(tmp_path / "seg").table["utterance_id"]) == ["calls/monday/000", "calls/monday/001"]
