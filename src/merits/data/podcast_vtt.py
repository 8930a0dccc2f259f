"""Podcast WebVTT adapter: Whisper transcripts of podcast episodes -> an UNLABELLED manifest (the text corpus that
LLM teachers pseudo-label for text pretraining; a stand-in for MSP-Podcast's ASR transcripts).

``root`` = a folder of ``.vtt`` files (one episode each, e.g. ``shared/data/podcast_asr/vtt``) or one ``.vtt`` file.
Cues look like::

    00:00:07.000 --> 00:00:20.000
    [Amit Varma]: Ram Singh is a farmer in a small village in India.

Rows: conversation_id = the episode (file name up to its first dot: ``E01.mp3.vtt`` -> ``E01``); turn = the
utterance's position in the episode among all utterances formed (gaps show where utterances were filtered out);
utterance_id = ``<episode>_<turn:05d>``; split = train; label empty; text = the cue text without the speaker tag;
speaker = the tag (reference only; ``keep_speaker=false`` leaves it empty); start / end = seconds in the episode
(there is no audio_path: the audio is not distributed).

Segmentation: Whisper cuts cues every few seconds, often mid-sentence ("... a giant spaceship hovering over his
hut" / "with the logo of the Indian government on it."). With ``merge`` (default) a cue is joined to the next one
when the same speaker goes on, the text so far does not end a sentence, the pause is at most ``max_gap`` seconds
and the utterance stays within ``max_seconds``.

Quirks of the real files (309 episodes, 568,983 cues) and how they are handled:
- 25 cues end before they start (timestamp glitches): kept; start / end are the min / max of the cue bounds.
- consecutive identical utterances (Whisper repetition loops: "Single digit percentages." twice): the repeat is
  dropped and counted.
- about 580 cues are mostly non-Latin script (Hindi passages mis-transcribed, e.g. E104): utterances whose letters
  are less than ``min_latin_share`` Latin are dropped and counted.
- short fillers ("Yeah.", "Right."): utterances with fewer than ``min_words`` words are dropped and counted.
Every drop is counted in ``Manifest.excluded`` (reason -> utterances), so kept + excluded = utterances formed.

A malformed file (no WEBVTT header, a bad timing line, undecodable bytes) is a DataError naming the file and line.
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, _listing
from merits.errors import DataError

CORPUS = "podcast_vtt"
_TIME = r"(?:(\d+):)?([0-5]\d):([0-5]\d)[.,](\d{3})"  # WebVTT: hours optional; a comma (SRT habit) is tolerated
TIMING = re.compile(rf"^\s*{_TIME}\s+-->\s+{_TIME}(?:\s+.*)?$")
SPEAKER_TAG = re.compile(r"^\[([^\]]*)\]:\s*")
VOICE_TAG = re.compile(r"^<v(?:\.[^\s>]*)?\s+([^>]*)>")  # standard WebVTT voice span <v Name>
MARKUP = re.compile(r"</?[a-zA-Z][^>]*>|<\d\d:[^>]*>")    # <i>, <c.x>, </v>, inline timestamps
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


@dataclass
class Cue:
    start: float
    end: float
    speaker: str
    text: str
    line: int  # 1-based line of the timing line, for messages


def _seconds(groups) -> float:
    h, m, s, ms = groups
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def read_vtt(path: str | Path) -> list[Cue]:
    """The cues of one WebVTT file, in file order. DataError names the file and line of anything malformed."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines[0].startswith("WEBVTT") or (len(lines[0]) > 6 and lines[0][6] not in " \t"):
        raise DataError(f"{path}:1: a WebVTT file must start with 'WEBVTT', found {lines[0][:40]!r}")
    cues: list[Cue] = []
    i = 1
    while i < len(lines) and lines[i].strip():  # the header block (WEBVTT line plus optional metadata)
        i += 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block_start = i
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i])
            i += 1
        if block[0].startswith(("NOTE", "STYLE", "REGION")) and "-->" not in block[0]:
            continue
        # an optional cue identifier precedes the timing line
        t = 0 if "-->" in block[0] else 1
        if t >= len(block) or "-->" not in block[t]:
            raise DataError(f"{path}:{block_start + 1}: expected a cue timing line 'HH:MM:SS.mmm --> HH:MM:SS.mmm', "
                            f"found {block[0][:60]!r}")
        m = TIMING.match(block[t])
        if not m:
            raise DataError(f"{path}:{block_start + t + 1}: malformed cue timing {block[t][:60]!r} "
                            "(expected 'HH:MM:SS.mmm --> HH:MM:SS.mmm')")
        body = " ".join(s.strip() for s in block[t + 1:]).strip()
        speaker = ""
        tag = SPEAKER_TAG.match(body) or VOICE_TAG.match(body)
        if tag:
            speaker, body = tag.group(1).strip(), body[tag.end():]
        body = " ".join(html.unescape(MARKUP.sub("", body)).split())
        if body:
            cues.append(Cue(_seconds(m.groups()[:4]), _seconds(m.groups()[4:]), speaker, body, block_start + t + 1))
    return cues


def segment(cues: list[Cue], merge: bool = True, max_gap: float = 1.0, max_seconds: float = 30.0) -> list[Cue]:
    """Join continuation cues into utterances (see the module doc); without ``merge`` each cue is one utterance."""
    out: list[Cue] = []
    for c in cues:
        prev = out[-1] if out else None
        if (merge and prev is not None and c.speaker == prev.speaker and not SENTENCE_END.search(prev.text)
                and c.start - prev.end <= max_gap and max(c.end, c.start) - prev.start <= max_seconds):
            out[-1] = Cue(prev.start, max(prev.end, c.start, c.end), prev.speaker, f"{prev.text} {c.text}", prev.line)
        else:
            out.append(Cue(min(c.start, c.end), max(c.start, c.end), c.speaker, c.text, c.line))
    return out


def _latin_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    return sum(ch.isascii() for ch in letters) / len(letters) if letters else 0.0


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def _episode(path: Path) -> str:
    return path.name.split(".")[0]


def _files(root) -> list[Path]:
    if root is None:
        raise DataError("podcast_vtt needs root = a folder of .vtt files or one .vtt file "
                        "(e.g. data.root=../shared/data/podcast_asr/vtt)")
    p = Path(root)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(f"podcast_vtt root {p} does not exist")
    files = sorted(p.glob("*.vtt"), key=lambda f: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", f.name)])
    if not files:
        raise DataError(f"podcast_vtt root {p} holds no .vtt files")
    episodes = [_episode(f) for f in files]
    dup = sorted({e for e in episodes if episodes.count(e) > 1})
    if dup:
        raise DataError(f"podcast_vtt root {p}: several files give the same episode id: {_listing(dup)}")
    return files


def build(root=None, max_segments: int | None = None, seed: int = 0, min_words: int = 3, merge: bool = True,
          max_gap: float = 1.0, max_seconds: float = 30.0, min_latin_share: float = 0.5,
          keep_speaker: bool = True, drop_repeats: bool = True, name: str = CORPUS) -> Manifest:
    """Unlabelled manifest (split train) of the utterances of every episode under ``root``.

    max_segments: keep at most this many utterances, drawn uniformly with ``random.Random(seed)`` after filtering
    (then put back in episode order), e.g. 20000 for a pseudo-labelling run. min_words: drop shorter utterances.
    merge / max_gap / max_seconds: segmentation (module doc). min_latin_share: drop utterances whose letters are
    mostly not Latin script. keep_speaker: keep the speaker tag in the ``speaker`` column (reference only).
    drop_repeats: drop an utterance identical to the one before (a Whisper loop); false keeps every cue.
    """
    if max_segments is not None and max_segments < 1:
        raise DataError(f"podcast_vtt max_segments must be >= 1 (or null for all), got {max_segments}")
    files = _files(root)
    records, excluded = [], {"repeated utterance": 0, f"fewer than {min_words} words": 0, "mostly non-Latin script": 0}
    for f in files:
        episode, previous = _episode(f), None
        for turn, u in enumerate(segment(read_vtt(f), merge, max_gap, max_seconds)):
            norm = _norm(u.text)
            repeated, previous = drop_repeats and norm == previous, norm
            if repeated:
                excluded["repeated utterance"] += 1
            elif len(u.text.split()) < min_words:
                excluded[f"fewer than {min_words} words"] += 1
            elif _latin_share(u.text) < min_latin_share:
                excluded["mostly non-Latin script"] += 1
            else:
                records.append((f"{episode}_{turn:05d}", episode, turn, u.text, u.speaker if keep_speaker else "",
                                round(u.start, 3), round(u.end, 3)))
    if not records:
        raise DataError(f"podcast_vtt: no utterance of {len(files)} files under {root} passes the filters {excluded}")
    if max_segments is not None and len(records) > max_segments:
        keep = sorted(random.Random(seed).sample(range(len(records)), max_segments))
        excluded[f"not drawn (max_segments={max_segments}, seed={seed})"] = len(records) - max_segments
        records = [records[i] for i in keep]
    t = pd.DataFrame(records, columns=["utterance_id", "conversation_id", "turn", "text", "speaker", "start", "end"])
    t["split"], t["label"] = "train", ""
    source = f"{Path(root).resolve()} ({len(files)} WebVTT files)"
    return Manifest(name, (), t, source, {k: v for k, v in excluded.items() if v}).validate()
