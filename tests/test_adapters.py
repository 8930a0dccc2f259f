"""Tests of the IEMOCAP, CMU-MOSI, MSP-Podcast and custom adapters.

IEMOCAP runs on a synthetic release in the official layout (tests/fixtures_iemocap.py); CMU-MOSI and MSP-Podcast run
on the real files under ../shared/data (their absence fails the tests) and on small fixtures written here.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from conftest import SHARED
from fixtures_iemocap import dialog_names, utterance_codes, utterance_ids, write_iemocap_release, write_wav
from merits.data import prepare
from merits.data import iemocap, mosi, msp_podcast
from merits.data.manifest import NO_LABEL, Manifest
from merits.errors import DataError

MOSI_TABLE = SHARED / "mosi" / "mosi_utterances.csv"
MSP_DIR = SHARED / "msp_format"


# ============================================================================================== IEMOCAP
@pytest.fixture(scope="module")
def iemocap_release(tmp_path_factory) -> Path:
    return write_iemocap_release(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def iemocap_manifest(iemocap_release):
    return prepare("iemocap", iemocap_release, strict_counts=False)


def test_iemocap_counts_and_label_merge(iemocap_manifest):
    codes = utterance_codes()
    kept = {u: c for u, c in codes.items() if c in iemocap.LABEL_MAP}
    t = iemocap_manifest.table
    assert iemocap_manifest.labels == ("anger", "happiness", "sadness", "neutral")
    assert len(t) == len(kept)
    assert set(t["utterance_id"]) == set(kept)
    by_id = dict(zip(t["utterance_id"], t["label"]))
    assert all(by_id[u] == "happiness" for u, c in kept.items() if c in ("hap", "exc"))
    counts = Counter(t["label"])
    assert counts["happiness"] == sum(c in ("hap", "exc") for c in codes.values())
    assert counts["anger"] == sum(c == "ang" for c in codes.values())


def test_iemocap_exclusions_counted_by_code(iemocap_manifest):
    dropped = Counter(c for c in utterance_codes().values() if c not in iemocap.LABEL_MAP)
    assert iemocap_manifest.excluded == dict(dropped)
    assert len(iemocap_manifest.table) + sum(iemocap_manifest.excluded.values()) == len(utterance_codes())


def test_iemocap_turns_follow_start_time(iemocap_manifest):
    """The EmoEvaluation lines are shuffled in the fixture; turns must follow the time order F000, M000, F001, ..."""
    t = iemocap_manifest.table
    kept = {u for u, c in utterance_codes().items() if c in iemocap.LABEL_MAP}
    for dialog in dialog_names(1, 2):
        conv = t[t["conversation_id"] == dialog].sort_values("turn")
        assert list(conv["utterance_id"]) == [u for u in utterance_ids(dialog, 6) if u in kept]
        assert list(conv["turn"]) == list(range(len(conv)))
        # the [V, A, D] triple gives valence and arousal (1-5 scale)
        assert conv["valence"].between(1, 5).all() and conv["arousal"].between(1, 5).all()


def test_iemocap_splits_and_validation_session(iemocap_manifest, iemocap_release):
    t = iemocap_manifest.table
    session = t["utterance_id"].str[:5]
    assert set(t.loc[t["split"] == "test", "utterance_id"].str[:5]) == {"Ses05"}
    assert (t.loc[session == "Ses05", "split"] == "test").all()
    assert set(session[t["split"] == "validation"]) == {"Ses04"}
    assert set(session[t["split"] == "train"]) == {"Ses01", "Ses02", "Ses03"}
    other = prepare("iemocap", iemocap_release, strict_counts=False, validation_session=2).table
    assert set(other.loc[other["split"] == "validation", "utterance_id"].str[:5]) == {"Ses02"}
    assert set(other.loc[other["split"] == "train", "utterance_id"].str[:5]) == {"Ses01", "Ses03", "Ses04"}
    for bad in (5, 0, "x"):
        with pytest.raises(DataError, match="validation_session"):
            iemocap.build(iemocap_release, strict_counts=False, validation_session=bad)


def test_iemocap_text_audio_speaker(iemocap_manifest):
    t = iemocap_manifest.table
    assert not t["utterance_id"].str.contains("XX").any()  # Ses01F_impro01_MXX0 lines are not utterances
    row = t[t["utterance_id"] == "Ses01F_impro01_F000"].iloc[0]
    assert row["text"] == "Synthetic sentence 0 of Ses01F_impro01."
    assert row["speaker"] == "Ses01_F"
    assert Path(row["audio_path"]).is_absolute() and Path(row["audio_path"]).is_file()
    assert row["audio_path"].endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert t["start"].isna().all() and t["end"].isna().all()
    assert (t.loc[t["utterance_id"].str.endswith("M000"), "speaker"].str.endswith("_M")).all()


def test_iemocap_official_count_check(iemocap_release):
    with pytest.raises(DataError, match="5531"):
        prepare("iemocap", iemocap_release)


def test_iemocap_parent_folder_and_subset_of_sessions(tmp_path):
    write_iemocap_release(tmp_path, sessions=(1, 5), dialogs_per_session=1)
    m = prepare("iemocap", tmp_path)  # the folder above IEMOCAP_full_release; strict check needs all 5 sessions
    assert set(m.table["split"]) == {"train", "test"}


def test_iemocap_missing_wav(tmp_path):
    release = write_iemocap_release(tmp_path, sessions=(1,), dialogs_per_session=1)
    victim = next(u for u, c in utterance_codes((1,), 1).items() if c in iemocap.LABEL_MAP)
    (release / "Session1" / "sentences" / "wav" / victim.rsplit("_", 1)[0] / f"{victim}.wav").unlink()
    with pytest.raises(DataError, match=f"missing.*{victim}.wav"):
        prepare("iemocap", release)


def test_iemocap_unknown_code_and_missing_transcript(tmp_path):
    release = write_iemocap_release(tmp_path, sessions=(1,), dialogs_per_session=1)
    evaluation = release / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    transcript = release / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    lines = transcript.read_text().splitlines()
    kept = [u for u, c in utterance_codes((1,), 1).items() if c in iemocap.LABEL_MAP]
    transcript.write_text("\n".join(line for line in lines if not line.startswith(kept[0])) + "\n")
    with pytest.raises(DataError, match=f"no transcript line.*{kept[0]}"):
        prepare("iemocap", release)
    m = prepare("iemocap", release, require_text=False)
    assert m.table.loc[m.table["utterance_id"] == kept[0], "text"].item() == ""
    evaluation.write_text(evaluation.read_text().replace("\tneu\t", "\tjoy\t"))
    with pytest.raises(DataError, match="unknown emotion codes.*'joy'"):
        prepare("iemocap", release)


def test_iemocap_wrong_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare("iemocap", tmp_path / "nowhere")
    with pytest.raises(DataError, match="Session1..Session5.*EmoEvaluation"):
        prepare("iemocap", tmp_path)
    (tmp_path / "Session1").mkdir()
    with pytest.raises(DataError, match="lacks Session1/dialog/EmoEvaluation"):
        prepare("iemocap", tmp_path)


# ============================================================================================== CMU-MOSI
@pytest.fixture(scope="module")
def mosi_poria():
    return prepare("mosi", MOSI_TABLE)


def test_mosi_poria_counts(mosi_poria):
    t = mosi_poria.table
    assert mosi_poria.labels == ("negative", "positive")
    assert len(t) == 2199
    test = t[t["split"] == "test"]
    assert len(test) == 752 and test["conversation_id"].nunique() == 31
    trainval = t[t["split"] != "test"]
    assert len(trainval) == 1447 and trainval["conversation_id"].nunique() == 62
    raw = pd.read_csv(MOSI_TABLE, usecols=["utt_id", "video_id", "sclstm_split"])
    assert list(t["utterance_id"].sort_values()) == list(raw["utt_id"].sort_values())
    first_62 = list(dict.fromkeys(raw["video_id"]))[:62]
    assert set(trainval["conversation_id"]) == set(first_62)


def test_mosi_validation_carved_by_video(mosi_poria):
    t = mosi_poria.table
    assert (t.groupby("conversation_id")["split"].nunique() == 1).all()
    val_videos = set(t.loc[t["split"] == "validation", "conversation_id"])
    assert len(val_videos) == round(62 * 0.2)
    again = prepare("mosi", MOSI_TABLE).table
    assert set(again.loc[again["split"] == "validation", "conversation_id"]) == val_videos
    other = prepare("mosi", MOSI_TABLE, split_seed=1).table
    assert set(other.loc[other["split"] == "validation", "conversation_id"]) != val_videos
    none = prepare("mosi", MOSI_TABLE, validation_fraction=0).table
    assert not (none["split"] == "validation").any() and (none["split"] == "train").sum() == 1447
    with pytest.raises(DataError, match="validation_fraction"):
        prepare("mosi", MOSI_TABLE, validation_fraction=1.0)


def test_mosi_standard_split():
    t = prepare("mosi", MOSI_TABLE.parent, split="standard").table
    assert t["split"].value_counts().to_dict() == {"train": 1284, "test": 686, "validation": 229}
    assert (t.groupby("conversation_id")["split"].nunique() == 1).all()
    with pytest.raises(DataError, match="split must be one of"):
        prepare("mosi", MOSI_TABLE, split="random")


def test_mosi_binary_label_rule_turns_and_valence(mosi_poria):
    t = mosi_poria.table.set_index("utterance_id")
    raw = pd.read_csv(MOSI_TABLE, usecols=["utt_id", "binary_label", "sentiment", "text"]).set_index("utt_id")
    scored = raw["sentiment"].notna()
    assert scored.sum() == 2195
    expected = (raw["sentiment"] >= 0).where(scored, raw["binary_label"] == 1).map({True: "positive", False: "negative"})
    assert (t.loc[raw.index, "label"] == expected).all()
    assert (t.loc[raw.index[scored], "valence"] == raw.loc[scored, "sentiment"]).all()
    assert t.loc[raw.index[~scored], "valence"].isna().all()
    assert (t.loc[raw.index, "text"] == raw["text"].str.lower()).all()
    assert t.loc["1DmNV9C1hbY_10", "turn"] == 10 and t.loc["5W7Z1C_fDaE_24", "conversation_id"] == "5W7Z1C_fDaE"
    first = mosi_poria.table[mosi_poria.table["conversation_id"] == "1DmNV9C1hbY"]
    assert list(first["turn"]) == sorted(first["turn"])  # numeric order, not 1, 10, 12, 2


def test_mosi_committed_splits_match_table():
    raw = pd.read_csv(MOSI_TABLE, usecols=["video_id", "sclstm_split", "std_split"]).drop_duplicates("video_id")
    poria = json.loads((mosi.SPLITS_DIR / "mosi_poria.json").read_text())
    standard = json.loads((mosi.SPLITS_DIR / "mosi_standard.json").read_text())
    assert poria["test"] == list(raw.loc[raw["sclstm_split"] == "test", "video_id"])
    assert poria["train"] == list(raw["video_id"][:62])
    assert set(standard["validation"]) == set(raw.loc[raw["std_split"] == "dev", "video_id"])


def _write_mosi_raw(root: Path, videos: dict[str, list[tuple[int, str, float]]]) -> Path:
    """Raw CMU layout for a few videos: transcripts, 16 kHz wavs and a segment_id,sentiment labels file."""
    (root / mosi.TRANSCRIPTS).mkdir(parents=True)
    rows = []
    for video, segments in videos.items():
        lines = [f"{n}_DELIM_{text}" for n, text, _ in segments]
        (root / mosi.TRANSCRIPTS / f"{video}.annotprocessed").write_text("\n".join(lines) + "\n")
        for n, _, score in segments:
            write_wav(root / mosi.AUDIO / f"{video}_{n}.wav", seed=n, seconds=0.1)
            rows.append({"segment_id": f"{video}_{n}", "sentiment": score})
    labels = root / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return labels


def test_mosi_raw_layout(tmp_path):
    poria = json.loads((mosi.SPLITS_DIR / "mosi_poria.json").read_text())
    train_a, train_b, test_a = poria["train"][0], poria["train"][2], poria["test"][0]
    labels = _write_mosi_raw(tmp_path, {
        train_a: [(1, "i loved it", 2.0), (10, "but the end", -0.4), (2, "really", 0.0)],
        train_b: [(1, "meh", -1.2)],
        test_a: [(3, "great film", 1.4), (4, "awful", -2.6)],
    })
    m = prepare("mosi", tmp_path, labels_file=labels, strict_counts=False, validation_fraction=0.5)
    t = m.table
    assert len(t) == 6
    a = t[t["conversation_id"] == train_a]
    assert list(a["turn"]) == [1, 2, 10] and list(a["label"]) == ["positive", "positive", "negative"]
    assert set(t.loc[t["conversation_id"] == test_a, "split"]) == {"test"}
    assert sorted(t.loc[t["conversation_id"] != test_a].groupby("conversation_id")["split"].first()) == ["train", "validation"]
    assert all(Path(p).is_file() for p in t["audio_path"])
    assert t.loc[t["utterance_id"] == f"{train_a}_10", "text"].item() == "but the end"
    standard = prepare("mosi", tmp_path, labels_file=labels, strict_counts=False, split="standard").table
    assert set(standard["split"]) <= {"train", "validation", "test"}
    with pytest.raises(DataError, match="2199"):
        prepare("mosi", tmp_path, labels_file=labels)
    with pytest.raises(DataError, match="labels_file"):
        prepare("mosi", tmp_path, strict_counts=False)
    (tmp_path / mosi.AUDIO / f"{train_b}_1.wav").unlink()
    with pytest.raises(DataError, match=f"missing.*{train_b}_1.wav"):
        prepare("mosi", tmp_path, labels_file=labels, strict_counts=False)


def test_mosi_raw_layout_errors(tmp_path):
    labels = _write_mosi_raw(tmp_path, {"notAPoriaVideo": [(1, "hello", 1.0)]})
    with pytest.raises(DataError, match="not in the committed poria split.*notAPoriaVideo"):
        prepare("mosi", tmp_path, labels_file=labels, strict_counts=False)
    pd.DataFrame({"segment_id": ["other_1"], "sentiment": [1.0]}).to_csv(labels, index=False)
    with pytest.raises(DataError, match="no label for 1 segments: notAPoriaVideo_1"):
        prepare("mosi", tmp_path, labels_file=labels, strict_counts=False)
    (tmp_path / mosi.TRANSCRIPTS / "notAPoriaVideo.annotprocessed").write_text("hello without a number\n")
    with pytest.raises(DataError, match="notAPoriaVideo.annotprocessed:1"):
        prepare("mosi", tmp_path, labels_file=labels, strict_counts=False)


def test_mosi_wrong_root_and_bad_table(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare("mosi", tmp_path / "nowhere")
    with pytest.raises(DataError, match="neither mosi_utterances.csv nor"):
        prepare("mosi", tmp_path)
    bad = tmp_path / "t.csv"
    pd.DataFrame({"utt_id": ["v_1"], "video_id": ["v"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="missing columns"):
        prepare("mosi", bad)
    pd.DataFrame({"utt_id": ["v_1", "v_x"], "video_id": ["v", "v"], "text": ["a", "b"], "sentiment": [1, 2],
                  "sclstm_split": ["train", "train"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="v_x"):
        prepare("mosi", bad, strict_counts=False)
    pd.DataFrame({"utt_id": ["v_1", "v_2"], "video_id": ["v", "v"], "text": ["a", ""], "sentiment": [1, -2],
                  "sclstm_split": ["train", "train"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="empty text.*v_2"):
        prepare("mosi", bad, strict_counts=False)


# ============================================================================================== MSP-Podcast
def test_msp_shared_fixture_nothing_lost():
    m = prepare("msp_podcast", MSP_DIR)
    t = m.table
    raw = pd.read_csv(MSP_DIR / "labels_consensus.csv")
    assert len(raw) == 5427
    assert len(t) + sum(m.excluded.values()) == 5427
    assert m.excluded == {"U": 33, "F": 6, "D": 1, "C": 10, "O": 47, "X": 916}
    assert m.labels == ("anger", "happiness", "sadness", "neutral")
    assert set(t["split"]) == {"train"} and "5427 rows without Split_Set" in m.source
    merged = t.assign(FileName=t["utterance_id"] + ".wav").merge(raw, on="FileName")
    assert len(merged) == len(t)
    assert (merged["valence"] == merged["EmoVal"]).all() and (merged["arousal"] == merged["EmoAct"]).all()
    row = t[t["utterance_id"] == "004-017.1-2_40"].iloc[0]
    assert row["conversation_id"] == "004-017.1-2" and row["turn"] == 40
    assert row["audio_path"].endswith("msp_format/Audios/004-017.1-2_40.wav") and row["text"] == ""
    full = prepare("msp_podcast", MSP_DIR / "labels_consensus.csv", label_map="all")
    assert len(full.table) + sum(full.excluded.values()) == 5427 and full.excluded == {"O": 47, "X": 916}
    with pytest.raises(DataError, match="5427 rows have no Split_Set"):
        prepare("msp_podcast", MSP_DIR, unknown_split=None)


def _write_msp_release(root: Path) -> Path:
    rows = [
        ("MSP-PODCAST_0001_0003.wav", "A", "Train"), ("MSP-PODCAST_0001_0001.wav", "H", "Train"),
        ("MSP-PODCAST_0001_0002.wav", "X", "Train"), ("MSP-PODCAST_0002_0001.wav", "S", "Development"),
        ("MSP-PODCAST_0003_0001.wav", "N", "Test1"), ("MSP-PODCAST_0003_0002.wav", "U", "Test1"),
        ("MSP-PODCAST_0004_0010.wav", "N", "Test2"), ("MSP-PODCAST_0005_0001.wav", "N", "Train"),
        ("MSP-PODCAST_0005_0002.wav", "S", "Development"),
    ]
    (root / "Labels").mkdir(parents=True)
    table = pd.DataFrame([{"FileName": f, "EmoClass": c, "EmoAct": 4.0 + i / 10, "EmoVal": 3.0 + i / 10, "EmoDom": 4.0,
                           "SpkrID": 100 + i, "Gender": "Female", "Split_Set": s} for i, (f, c, s) in enumerate(rows)])
    table.to_csv(root / "Labels" / "labels_consensus.csv", index=False)
    (root / "Transcripts").mkdir()
    for i, (name, _, _) in enumerate(rows):
        write_wav(root / "Audios" / name, seed=i, seconds=0.1)
        (root / "Transcripts" / name.replace(".wav", ".txt")).write_text(f" words of segment {i}\n")
    return root


def test_msp_release_layout(tmp_path):
    root = _write_msp_release(tmp_path)
    m = prepare("msp_podcast", root)
    t = m.table.set_index("utterance_id")
    assert len(t) + sum(m.excluded.values()) == 9
    assert m.excluded == {"U": 1, "X": 1}
    assert t.loc["MSP-PODCAST_0001_0003", "split"] == "train" and t.loc["MSP-PODCAST_0002_0001", "split"] == "validation"
    assert t.loc["MSP-PODCAST_0004_0010", "split"] == "test" and t.loc["MSP-PODCAST_0003_0001", "split"] == "test"
    first = m.table[m.table["conversation_id"] == "MSP-PODCAST_0001"]
    assert list(first["turn"]) == [1, 3] and list(first["label"]) == ["happiness", "anger"]
    # recording 0005 has a train and a development segment: one conversation per split
    assert {"MSP-PODCAST_0005@train", "MSP-PODCAST_0005@validation"} <= set(t["conversation_id"])
    assert t.loc["MSP-PODCAST_0001_0001", "text"] == "words of segment 1"
    assert t.loc["MSP-PODCAST_0001_0001", "speaker"] == "101"
    assert all(Path(p).is_file() for p in t["audio_path"])
    only_test1 = prepare("msp_podcast", root, test_sets=["Test1"])
    assert only_test1.excluded["Split_Set=Test2"] == 1 and "MSP-PODCAST_0004_0010" not in set(only_test1.table["utterance_id"])


def test_msp_missing_files_and_bad_input(tmp_path):
    root = _write_msp_release(tmp_path)
    (root / "Transcripts" / "MSP-PODCAST_0001_0001.txt").unlink()
    with pytest.raises(DataError, match="transcripts are missing.*MSP-PODCAST_0001_0001.txt"):
        prepare("msp_podcast", root)
    m = prepare("msp_podcast", root, require_transcripts=False)
    assert m.table.loc[m.table["utterance_id"] == "MSP-PODCAST_0001_0001", "text"].item() == ""
    (root / "Audios" / "MSP-PODCAST_0001_0003.wav").unlink()
    with pytest.raises(DataError, match="audio files are missing.*MSP-PODCAST_0001_0003.wav"):
        prepare("msp_podcast", root, require_transcripts=False)
    shutil.rmtree(root / "Audios")
    assert len(prepare("msp_podcast", root, require_transcripts=False).table) == 7  # labels only: expected paths kept
    labels = root / "Labels" / "labels_consensus.csv"
    t = pd.read_csv(labels)
    t.loc[0, "EmoClass"] = "Q"
    t.to_csv(labels, index=False)
    with pytest.raises(DataError, match="unknown EmoClass.*'Q'"):
        prepare("msp_podcast", root, require_transcripts=False)
    t.loc[0, "EmoClass"], t.loc[1, "Split_Set"] = "A", "Holdout"
    t.to_csv(labels, index=False)
    with pytest.raises(DataError, match="unknown Split_Set values Holdout"):
        prepare("msp_podcast", root, require_transcripts=False)
    with pytest.raises(DataError, match="label_map"):
        msp_podcast.build(root, label_map="five")


def test_msp_wrong_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare("msp_podcast", tmp_path / "nowhere")
    with pytest.raises(DataError, match="neither Labels/labels_consensus.csv nor labels_consensus.csv"):
        prepare("msp_podcast", tmp_path)


# ============================================================================================== custom
def _write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_custom_csv_happy_path(tmp_path):
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "a.wav", seed=1, seconds=0.1)
    path = _write_csv(tmp_path / "data.csv", [
        {"conversation_id": "c1", "split": "train", "text": "hello", "label": "joy", "audio_path": "audio/a.wav"},
        {"conversation_id": "c1", "split": "train", "text": "oh no", "label": "sad", "audio_path": ""},
        {"conversation_id": "c2", "split": "test", "text": "fine", "label": "", "audio_path": ""},
    ])
    m = prepare("custom", path)
    t = m.table
    assert m.labels == ("joy", "sad")
    assert list(t["utterance_id"]) == ["c1_0", "c1_1", "c2_0"] and list(t["turn"]) == [0, 1, 0]
    assert t.loc[0, "audio_path"] == str((tmp_path / "audio" / "a.wav").resolve())
    assert t.loc[2, "label"] == ""
    named = prepare("custom", path, labels=["sad", "joy", "angry"], name="mine")
    assert named.labels == ("sad", "joy", "angry") and named.corpus == "mine"


def test_custom_jsonl_happy_path(tmp_path):
    path = tmp_path / "data.jsonl"
    records = [
        {"utterance_id": "u2", "conversation_id": "d1", "turn": 5, "split": "validation", "text": "later", "label": "neg",
         "valence": -0.5},
        {"utterance_id": "u1", "conversation_id": "d1", "turn": 2, "split": "validation", "text": "first", "label": "pos"},
    ]
    path.write_text(json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\n")
    t = prepare("custom", path, labels="neg,pos").table
    assert list(t["utterance_id"]) == ["u1", "u2"] and list(t["turn"]) == [2, 5]
    assert t.loc[1, "valence"] == -0.5 and pd.isna(t.loc[0, "valence"])
    listed = tmp_path / "data.json"  # a .json file may hold one list of records; ids may be numbers
    listed.write_text(json.dumps([{"utterance_id": 7, "conversation_id": 1, "split": "train", "text": "a"},
                                  {"conversation_id": 1, "split": "train", "text": "b"}]))
    unlabelled = prepare("custom", listed)
    assert list(unlabelled.table["utterance_id"]) == ["7", "1_1"]
    assert unlabelled.labels == () and (unlabelled.table["label"] == "").all()


def test_custom_bad_input(tmp_path):
    base = {"conversation_id": "c1", "split": "train", "text": "hi", "label": "joy"}
    path = _write_csv(tmp_path / "d.csv", [base, {**base, "label": "rage"}])
    with pytest.raises(DataError, match=r"1 label\(s\) not among \['joy'\]: 'rage' \(1 rows, first line 3\)\. Map them with "
                                        r"the adapter option label_map.*-o label_map=rage:$"):
        prepare("custom", path, labels=["joy"])
    path = _write_csv(tmp_path / "d.csv", [{**base, "utterance_id": "x", "turn": 0}, {**base, "utterance_id": "x", "turn": 1}])
    with pytest.raises(DataError, match=r"duplicate utterance ids: line 2 \('x'\), line 3"):
        prepare("custom", path)
    path = _write_csv(tmp_path / "d.csv", [base, {**base, "text": "  "}])
    with pytest.raises(DataError, match="empty text and no audio_path: line 3"):
        prepare("custom", path)
    path = _write_csv(tmp_path / "d.csv", [{k: v for k, v in base.items() if k != "split"}])
    with pytest.raises(DataError, match=r"missing required columns \['split'\]"):
        prepare("custom", path)
    assert (prepare("custom", path, split="test").table["split"] == "test").all()  # new data: one split for all
    with pytest.raises(DataError, match="option split must be one of"):
        prepare("custom", path, split="dev")
    path = _write_csv(tmp_path / "d.csv", [{**base, "split": "dev"}])
    with pytest.raises(DataError, match=r"split must be one of .*line 2 \('dev'\)"):
        prepare("custom", path)
    path = _write_csv(tmp_path / "d.csv", [{**base, "lable": "joy"}])
    with pytest.raises(DataError, match=r"unknown columns \['lable'\]"):
        prepare("custom", path)
    path = _write_csv(tmp_path / "d.csv", [{**base, "audio_path": "missing.wav"}])
    with pytest.raises(DataError, match="audio files missing: line 2"):
        prepare("custom", path)
    bad_json = tmp_path / "d.jsonl"
    bad_json.write_text(json.dumps(base) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        prepare("custom", bad_json)
    with pytest.raises(DataError, match="does not exist"):
        prepare("custom", tmp_path / "nothing.csv")
    with pytest.raises(DataError, match="expected a .csv or .jsonl"):
        prepare("custom", _write_csv(tmp_path / "d.txt", [base]))


# ---------------------------------------------------------------------------------------------- audio folder
def test_audio_folder_conversations_in_natural_order(tmp_path):
    for name in ("turn-10.wav", "turn-2.wav", "notes.txt"):
        (tmp_path / "rec" / "call-b").mkdir(parents=True, exist_ok=True)
        write_wav(tmp_path / "rec" / "call-b" / name, seed=1, seconds=0.1)
    write_wav(tmp_path / "rec" / "loose.flac.wav", seed=2, seconds=0.1)
    (tmp_path / "rec" / "call-a").mkdir()
    write_wav(tmp_path / "rec" / "call-a" / "x.WAV", seed=3, seconds=0.1)
    m = prepare("audio_folder", tmp_path / "rec")
    t = m.table.sort_values(["conversation_id", "turn"])
    assert list(t["utterance_id"]) == ["call-a/x", "call-b/turn-2", "call-b/turn-10", "rec/loose.flac"]
    assert list(t["turn"]) == [0, 0, 1, 0] and (t["split"] == "test").all() and (t["label"] == "").all()
    assert m.excluded == {"not audio": 1} and m.labels == () and (m.label_ids() == NO_LABEL).all()
    assert t["audio_path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()


def test_audio_folder_bad_input(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare("audio_folder", tmp_path / "nowhere")
    (tmp_path / "empty" / "call").mkdir(parents=True)
    (tmp_path / "empty" / "call" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="holds no audio files"):
        prepare("audio_folder", tmp_path / "empty")
    (tmp_path / "deep" / "call" / "part").mkdir(parents=True)
    with pytest.raises(DataError, match="one level of sub-folders"):
        prepare("audio_folder", tmp_path / "deep")
    (tmp_path / "clash").mkdir()
    for name in ("a.wav", "a.flac"):
        write_wav(tmp_path / "clash" / name, seed=1, seconds=0.1)
    with pytest.raises(DataError, match="share a name up to the suffix: clash/a"):
        prepare("audio_folder", tmp_path / "clash")


# ============================================================================================== registry
def test_a_registered_adapter_is_a_corpus_name_with_its_own_options(monkeypatch, tmp_path):
    from merits.experiment import load_experiment
    from merits.data import ADAPTERS, register_adapter

    def build(root=None, turns: int = 2):
        table = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(turns)], "conversation_id": "c",
                              "turn": range(turns), "split": "train", "text": "hi", "label": ""})
        return Manifest("toy", (), table)

    monkeypatch.setitem(ADAPTERS, "toy", "merits.data.custom")  # restored after the test
    register_adapter("toy", build)
    assert len(prepare("toy").table) == 2 and len(prepare("toy", turns=3).table) == 3  # the default lives in build
    with pytest.raises(DataError, match=r"unknown option\(s\) \['split'\] for corpus 'toy'; it takes \['turns'\]"):
        prepare("toy", split="test")
    assert load_experiment(None, ["data.corpus=toy"]).data.corpus == "toy"  # the experiment checks use the registry


def test_prediction_input_defaults_live_in_the_library(tmp_path):
    from merits.data import load_prediction_input

    path = _write_csv(tmp_path / "calls.csv", [{"conversation_id": "c1", "text": "hello", "label": "joy"},
                                               {"conversation_id": "c1", "text": "hm", "label": ""}])
    m = load_prediction_input(path, ("sad", "joy"))
    assert (m.table["split"] == "test").all() and m.labels == ("sad", "joy")  # no split column: all to predict
    assert (load_prediction_input(path, ("sad", "joy"), split="train").table["split"] == "train").all()
    with pytest.raises(DataError, match="angry"):
        load_prediction_input(_write_csv(tmp_path / "bad.csv", [{"conversation_id": "c", "text": "x",
                                                                  "label": "angry"}]), ("sad", "joy"))


def test_custom_data_without_validation_carves_it_by_conversation(tmp_path):
    rows = [{"conversation_id": f"c{i}", "turn": k, "split": "train" if i < 18 else "test", "text": f"turn {k} of {i}",
             "label": "a" if k % 2 else "b"} for i in range(20) for k in range(3)]
    path = tmp_path / "own.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    from merits.errors import DataError

    with pytest.raises(DataError, match="validation_fraction"):  # train says how to get a validation split
        prepare("custom", path).require_labels()
    m = prepare("custom", path, validation_fraction=0.2, split_seed=1)
    val = m.table[m.table["split"] == "validation"]
    assert val["conversation_id"].nunique() == 4 and len(val) == 12  # whole conversations: 20 % of 18, rounded
    assert set(m.table.loc[m.table["split"] == "test", "conversation_id"]) == {"c18", "c19"}  # test untouched
    again = prepare("custom", path, validation_fraction=0.2, split_seed=1)
    assert again.table["split"].tolist() == m.table["split"].tolist()  # seeded
    assert prepare("custom", path, validation_fraction=0.2, split_seed=2).table["split"].tolist() != m.table["split"].tolist()


def test_label_problems_are_named(tmp_path):
    rows = [{"conversation_id": "c1", "turn": 0, "split": "train", "text": "x", "label": "joy"},
            {"conversation_id": "c1", "turn": 1, "split": "train", "text": "y", "label": "Joy "},
            {"conversation_id": "c2", "turn": 0, "split": "validation", "text": "z", "label": "joy"},
            {"conversation_id": "c3", "turn": 0, "split": "test", "text": "w", "label": "fear"}]
    path = tmp_path / "odd.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    m = prepare("custom", path)
    problems = m.label_problems()
    assert any("differ only by case or spacing" in p and "'Joy'" in p for p in problems)
    assert any("without a training example" in p and "fear (only in test)" in p for p in problems)
    from merits.experiment import load_experiment
    from merits.errors import DataError
    from merits.pipeline import build_manifest

    with pytest.raises(DataError, match="strict_labels"):
        build_manifest(load_experiment("offline", ["data.corpus=custom", f"data.root={path}", "data.strict_labels=true"]))
    notes = []
    build_manifest(load_experiment("offline", ["data.corpus=custom", f"data.root={path}"]), notes)
    assert len(notes) == 2 and notes[0].startswith("Labels: ")


def test_messages_that_used_to_mislead(tmp_path):
    from merits.data import load_manifest_or_corpus
    from merits.errors import DataError

    own = tmp_path / "my.csv"
    pd.DataFrame({"conversation_id": ["c"], "split": ["train"], "text": ["hi"], "label": ["a"]}).to_csv(own, index=False)
    with pytest.raises(DataError, match="is a file.*data.corpus=custom"):  # forgot data.corpus=custom
        prepare("meld", own)
    prepare("custom", own).save(tmp_path / "prepared")  # a prepared manifest folder as the custom root
    assert prepare("custom", tmp_path / "prepared").table["text"].tolist() == ["hi"]
    with pytest.raises(DataError, match=r"missing.csv does not exist"):
        load_manifest_or_corpus(str(tmp_path / "missing.csv"))


def test_a_conversation_id_reused_for_another_dialogue_is_named_by_its_column(tmp_path):
    """Grouping by a column that repeats across dialogues (a scene number per episode): the error names the
    column the user wrote (conversation_id / turn), never the utterance ids merits would have generated."""
    from merits.errors import DataError

    rows = [{"conversation_id": "scene1", "turn": k, "split": "train", "text": "x", "label": "a"} for k in (0, 1, 0, 1)]
    with pytest.raises(DataError, match=r"a turn appears more than once in one conversation: .scene1. turn 0 \(line 2, "
                                        r"line 4\).*make them unique") as err:
        prepare("custom", _write_csv(tmp_path / "turns.csv", rows))
    assert "utterance id" not in str(err.value)
    no_turns = [{k: v for k, v in r.items() if k != "turn"} for r in rows]
    no_turns[1]["conversation_id"] = "scene2"  # scene1, scene2, scene1, scene1: scene1 comes back
    with pytest.raises(DataError, match=r"comes back after other conversations.*line 4 \('scene1', first seen at line 2\)"):
        prepare("custom", _write_csv(tmp_path / "blocks.csv", no_turns))


def test_label_map_renames_merges_and_unlabels(tmp_path, caplog):
    """label_map: many-to-one, "" / null = unlabelled (kept as context), applied before the labels option is
    checked, recorded in the saved manifest; the command-line form "a:b,c:" is the same map."""
    rows = [{"conversation_id": "c1", "split": "train", "text": t, "label": lab}
            for t, lab in [("a", "happiness"), ("b", "excitement"), ("c", "other"), ("d", "sadness")]]
    path = _write_csv(tmp_path / "corpus.csv", rows)
    mapping = {"happiness": "joy", "excitement": "joy", "other": None, "frustration": "anger"}
    m = prepare("custom", path, label_map=mapping, labels=["joy", "sadness"])
    assert m.table["label"].tolist() == ["joy", "joy", "", "sadness"]
    assert m.counts()["unlabelled"] == 1 and "frustration" in caplog.text  # a key the file lacks: a warning
    assert "label map: happiness -> joy, excitement -> joy, other -> (unlabelled)" in m.report()
    again = Manifest.load(m.save(tmp_path / "saved"))
    assert again.label_map == {"happiness": "joy", "excitement": "joy", "other": "", "frustration": "anger"}
    assert prepare("custom", path, label_map="happiness:joy,excitement:joy,other:,frustration:anger").table.equals(m.table)
    import yaml  # the command line reads -o values as YAML: "a:b,c:" arrives as {"a:b,c": None}
    cli = yaml.safe_load("happiness:joy,excitement:joy,frustration:anger,other:")
    assert prepare("custom", path, label_map=cli, labels=["joy", "sadness"]).table.equals(m.table)
    from merits.errors import DataError

    with pytest.raises(DataError, match="label:class pairs"):
        prepare("custom", path, label_map="happiness=joy")
    with pytest.raises(DataError, match="not among.*label_map="):  # without the map the file's names differ
        prepare("custom", path, labels=["joy", "sadness"])


def test_own_data_gets_its_own_run_folder_and_table_heading(tmp_path):
    """`merits train offline data.corpus=custom data.root=calls.csv` trains into runs/offline-calls, headed
    'calls', not into the MELD demo's folder; an explicit name wins; a profile pointed at its own corpus keeps it."""
    from merits.experiment import load_experiment
    from merits.pipeline import dataset_name

    calls = tmp_path / "my calls.csv"
    assert load_experiment("offline", ["data.corpus=custom", f"data.root={calls}"]).name == "offline-my_calls"
    assert load_experiment("offline", ["data.corpus=custom", f"data.root={calls}", "data.options.name=support"]).name \
        == "offline-support"
    assert load_experiment("offline", ["data.corpus=custom", f"data.root={calls}", "name=mine"]).name == "mine"
    assert load_experiment("mosi-offline", ["data.root=/data/mosi.csv"]).name == "mosi-offline"
    assert load_experiment("offline", ["seeds=[1]"]).name == "meld-offline"
    assert load_experiment("offline", ["data.corpus=mosi", "data.root=/data/mosi.csv"]).name == "offline-mosi"
    rows = [{"conversation_id": "c1", "split": "train", "text": "hi", "label": "a"}]
    assert prepare("custom", _write_csv(tmp_path / "calls.csv", rows)).corpus == "calls"
    assert dataset_name("calls") == "calls" and dataset_name("meld") == "MELD"
