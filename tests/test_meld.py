import shutil

import pandas as pd
import pytest

from merits.data import prepare
from merits.data.manifest import Manifest
from merits.data.meld import EMBEDDED_ROOT, LABELS, repair_text
from merits.errors import DataError

from conftest import shared


@pytest.fixture(scope="module")
def meld():
    return prepare("meld")


def test_embedded_default_counts(meld):
    c = meld.counts()
    assert c["utterances"] == {"train": 9989, "validation": 1109, "test": 2610}
    assert c["conversations"] == {"train": 1038, "validation": 114, "test": 280}
    assert c["labels"]["train"] == {"neutral": 4710, "surprise": 1205, "fear": 268, "sadness": 683, "joy": 1743,
                                    "disgust": 271, "anger": 1109}
    assert [c["labels"]["test"][k] for k in ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")] == \
        [1256, 402, 281, 345, 208, 68, 50]
    assert meld.labels == LABELS
    sentiment = meld.split("train")["sentiment"].value_counts().to_dict()
    assert sentiment == {"neutral": 4710, "negative": 2945, "positive": 2334}


def test_shared_copy_equals_embedded(meld):
    other = prepare("meld", shared("meld"))
    assert other.fingerprint() == meld.fingerprint()


def test_raw_release_encoding_is_repaired(meld):
    raw = prepare("meld", shared("meld", "raw_release_encoding"))
    assert (raw.table["text"] == meld.table["text"]).all()
    assert (raw.table["speaker"] == meld.table["speaker"]).all()
    assert not raw.table["text"].str.contains("[\x80-\x9f\xa0]|Â", regex=True).any()
    assert "company’s" in raw.table["text"].iat[0]


def test_repair_text_maps_c1_through_cp1252():
    assert repair_text("it\x92s \x93fine\x94\x85 \x97 ok\xa0now") == "it’s “fine”… — ok now"


def test_order_by_utterance_id_with_gaps(meld):
    # train dialogue 60 does not exist; ids have gaps: turns must be increasing, not 0..n-1
    assert "train/dia60" not in set(meld.table["conversation_id"])
    gaps = 0
    for conv in meld.conversations("train"):
        turns = conv["turn"].tolist()
        assert turns == sorted(turns)
        gaps += turns != list(range(len(turns)))
    assert gaps == 72


def test_no_audio_without_meld_raw(meld):
    assert (meld.table["audio_path"] == "").all()


def _copy_release(tmp_path):
    root = tmp_path / "meld"
    shutil.copytree(EMBEDDED_ROOT, root)
    return root


def test_audio_paths_from_meld_raw_layout(tmp_path):
    root = _copy_release(tmp_path)
    table = pd.read_csv(root / "dev_sent_emo.csv")
    videos = root / "MELD.Raw" / "dev" / "dev_splits_complete"
    videos.mkdir(parents=True)
    for d, u in zip(table["Dialogue_ID"], table["Utterance_ID"]):
        (videos / f"dia{d}_utt{u}.mp4").write_bytes(b"")
    m = prepare("meld", root)
    dev = m.split("validation")
    assert dev["audio_path"].str.endswith(".mp4").all()
    assert dev["audio_path"].iat[0].endswith("dev_splits_complete/dia0_utt0.mp4")
    (videos / "dia0_utt0.mp4").unlink()
    with pytest.raises(DataError, match="missing.*dia0_utt0.mp4"):
        prepare("meld", root)


def test_wrong_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare("meld", tmp_path / "nope")
    with pytest.raises(DataError, match="lacks"):
        prepare("meld", tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.assign(Emotion=t["Emotion"].where(t.index != 3, "happy")), "unknown labels.*happy"),
    (lambda t: t.assign(Utterance=t["Utterance"].where(t.index != 5, "   ")), "empty text"),
    (lambda t: pd.concat([t, t.iloc[[0]]]), "duplicate utterance ids.*dev/dia0_utt0"),
    (lambda t: t.assign(Utterance_ID=t["Utterance_ID"].astype(str).where(t.index != 2, "x")), "non-integer Utterance_ID"),
    (lambda t: t.drop(columns="Emotion"), "missing columns"),
    (lambda t: t.iloc[:-1], "1108 utterances"),
])
def test_bad_input_is_named(tmp_path, edit, message):
    root = _copy_release(tmp_path)
    table = pd.read_csv(root / "dev_sent_emo.csv", dtype=str, keep_default_na=False)
    edit(table).to_csv(root / "dev_sent_emo.csv", index=False)
    with pytest.raises(DataError, match=message):
        prepare("meld", root)


def test_manifest_round_trip(meld, tmp_path):
    small = meld.subset(3)
    assert small.counts()["conversations"] == {"train": 3, "validation": 3, "test": 3}
    small.save(tmp_path / "m")
    again = Manifest.load(tmp_path / "m")
    assert again.fingerprint() == small.fingerprint()
    assert again.labels == small.labels
    with pytest.raises(DataError, match="no manifest"):
        Manifest.load(tmp_path / "empty")
