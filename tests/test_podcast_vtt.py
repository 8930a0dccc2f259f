"""Podcast WebVTT adapter: real episodes (speaker tags, timestamp glitches, Hindi passages), segmentation, sampling,
and malformed files that must name the file and line."""

import pytest

from conftest import shared
from merits.data import prepare
from merits.data.podcast_vtt import read_vtt, segment
from merits.errors import DataError


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """E01 (clean English) and E104 (Hindi passages, cues that end before they start), linked into one folder."""
    folder = tmp_path_factory.mktemp("vtt")
    for name in ("E01.mp3.vtt", "E104.mp3.vtt"):
        (folder / name).symlink_to(shared("podcast_asr", "vtt", name))
    return folder


def test_real_cues_are_parsed_with_speaker_tags_stripped():
    cues = read_vtt(shared("podcast_asr", "vtt", "E01.mp3.vtt"))
    first = cues[0]
    assert (first.start, first.end, first.speaker, first.text) == (0.0, 7.0, "Guest 2", "Welcome to the IBM Podcast Network.")
    assert cues[1].speaker == "Amit Varma" and cues[1].text.startswith("Ram Singh is a farmer")
    assert not any(c.text.startswith("[") for c in cues)
    glitch = [c for c in read_vtt(shared("podcast_asr", "vtt", "E104.mp3.vtt")) if c.end < c.start]
    assert glitch and glitch[0].text == "green"  # 00:17:27.640 --> 00:17:25.140 in the real file


def test_real_episodes_make_an_unlabelled_train_manifest(episodes):
    m = prepare("podcast_vtt", episodes)
    t = m.table
    assert m.labels == () and set(t["split"]) == {"train"} and set(t["label"]) == {""}
    assert set(t["conversation_id"]) == {"E01", "E104"} and set(t["audio_path"]) == {""}
    assert t["utterance_id"].is_unique and (t["end"] >= t["start"]).all()
    assert (t["text"].str.split().str.len() >= 3).all()
    assert not t["text"].str.contains(r"^\[", regex=True).any()
    assert "Amit Varma" in set(t["speaker"])
    # continuation cues are merged: the spaceship sentence spans two cues in E01 (00:00:20 and 00:00:27)
    row = t[t["text"].str.contains("giant spaceship")].iloc[0]
    assert "hovering over his hut with the logo" in row["text"] and row["text"].endswith("around his hut.")
    assert (row["start"], row["end"]) == (20.0, 36.0)
    # drops are counted, never silent: kept + excluded = utterances formed
    formed = sum(len(segment(read_vtt(episodes / f))) for f in ("E01.mp3.vtt", "E104.mp3.vtt"))
    assert len(t) + sum(m.excluded.values()) == formed
    assert m.excluded["mostly non-Latin script"] > 0 and m.excluded["repeated utterance"] > 0
    # the speaker column is optional
    assert set(prepare("podcast_vtt", episodes, keep_speaker=False).table["speaker"]) == {""}


def test_max_segments_is_a_deterministic_draw(episodes):
    a = prepare("podcast_vtt", episodes, max_segments=50, seed=1).table
    b = prepare("podcast_vtt", episodes, max_segments=50, seed=1).table
    c = prepare("podcast_vtt", episodes, max_segments=50, seed=2).table
    assert len(a) == 50 and a["utterance_id"].tolist() == b["utterance_id"].tolist()
    assert a["utterance_id"].tolist() != c["utterance_id"].tolist()
    assert a["conversation_id"].tolist() == sorted(a["conversation_id"], key=["E01", "E104"].index)  # episode order kept
    assert len(prepare("podcast_vtt", episodes, min_words=20).table) < len(prepare("podcast_vtt", episodes).table)


def test_segmentation_rules():
    from merits.data.podcast_vtt import Cue

    cues = [Cue(0, 2, "A", "so I was", 1), Cue(2, 4, "A", "thinking about it.", 2), Cue(4, 5, "A", "Then more", 3),
            Cue(5, 6, "B", "words here.", 4), Cue(9, 10, "B", "after a pause", 5), Cue(12, 13, "B", "too long a gap.", 6)]
    assert [u.text for u in segment(cues)] == ["so I was thinking about it.", "Then more", "words here.",
                                               "after a pause", "too long a gap."]
    assert len(segment(cues, merge=False)) == 6


def test_generic_webvtt_features(tmp_path):
    f = tmp_path / "ep.vtt"
    f.write_text("\ufeffWEBVTT - a title\r\nKind: captions\r\n\r\nNOTE a comment\r\n\r\ncue-1\r\n01:02.500 --> 01:04.000 align:start\r\n"
                 "<v Ann>Hello &amp; <i>welcome</i>\r\nback.\r\n")
    (c,) = read_vtt(f)
    assert (c.start, c.end, c.speaker, c.text) == (62.5, 64.0, "Ann", "Hello & welcome back.")


@pytest.mark.parametrize("content, line, message", [
    ("00:00:00.000 --> 00:00:01.000\n[A]: hi there you\n", 1, "a WebVTT file must start with 'WEBVTT'"),
    ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n[A]: fine words here\n\n00:00:01.000 -> 00:00:02.000\n[A]: bad arrow\n",
     6, "expected a cue timing line"),
    ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n[A]: fine words here\n\n\n00:00:1.0 --> 00:00:02.000\n[A]: bad time\n",
     7, "malformed cue timing"),
])
def test_malformed_file_names_file_and_line(tmp_path, content, line, message):
    f = tmp_path / "E999.mp3.vtt"
    f.write_text(content)
    with pytest.raises(DataError, match=rf"E999\.mp3\.vtt:{line}: {message}"):
        prepare("podcast_vtt", tmp_path)


def test_bad_roots_and_options(tmp_path):
    with pytest.raises(DataError, match="needs root"):
        prepare("podcast_vtt")
    with pytest.raises(DataError, match="holds no .vtt files"):
        prepare("podcast_vtt", tmp_path)
    (tmp_path / "x.vtt").write_bytes(b"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n\xff\xfe bad\n")
    with pytest.raises(DataError, match=r"x\.vtt:4: not UTF-8"):
        prepare("podcast_vtt", tmp_path)
    with pytest.raises(DataError, match="unknown option"):
        prepare("podcast_vtt", tmp_path, max_segment=3)
