"""A synthetic IEMOCAP release in the exact official layout, with small real wav files.

Used by the adapter tests and reusable by end-to-end tests of all stages::

    from fixtures_iemocap import write_iemocap_release
    release = write_iemocap_release(tmp_path)            # -> tmp_path / "IEMOCAP_full_release"
    manifest = prepare("iemocap", release, strict_counts=False)

Each dialog alternates F and M turns (F000, M000, F001, ...). The consensus lines of an EmoEvaluation file are
written in a shuffled order so that readers must order by start time. Labels follow ``utterance_codes`` so tests
know the truth without parsing the files. Every wav is 0.5 s of a 16 kHz mono int16 tone plus noise.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
DURATION_S = 0.5
# Cycled over the utterances of a session: every kept class and some dropped codes appear in every session.
CODE_CYCLE = ("neu", "ang", "hap", "sad", "exc", "fru", "neu", "xxx", "sad", "ang", "sur", "hap")
TURN_GAP_S = 1.0  # seconds between the starts of consecutive turns


def dialog_names(session: int, dialogs_per_session: int) -> list[str]:
    """Alternate improvised and scripted dialogs, recorded by the female (F) or male (M) actor of the session."""
    names = []
    for k in range(dialogs_per_session):
        gender = "F" if k % 2 == 0 else "M"
        kind = f"impro{k // 2 + 1:02d}" if k % 4 < 2 else f"script{k // 4 + 1:02d}_1"
        names.append(f"Ses{session:02d}{gender}_{kind}")
    return names


def utterance_ids(dialog: str, utterances_per_dialog: int) -> list[str]:
    """Ids in time order: F000, M000, F001, M001, ..."""
    return [f"{dialog}_{'FM'[j % 2]}{j // 2:03d}" for j in range(utterances_per_dialog)]


def utterance_codes(sessions=(1, 2, 3, 4, 5), dialogs_per_session: int = 2, utterances_per_dialog: int = 6,
                    seed: int = 0) -> dict[str, str]:
    """Utterance id -> emotion code of the release that ``write_iemocap_release`` writes with the same arguments."""
    codes = {}
    for session in sessions:
        offset = random.Random(seed * 1000 + session).randrange(len(CODE_CYCLE))
        i = 0
        for dialog in dialog_names(session, dialogs_per_session):
            for utt in utterance_ids(dialog, utterances_per_dialog):
                codes[utt] = CODE_CYCLE[(offset + i) % len(CODE_CYCLE)]
                i += 1
    return codes


def write_wav(path: Path, seed: int, seconds: float = DURATION_S) -> None:
    """A short 16 kHz mono int16 wav: a tone (pitch varies with the seed) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    signal = 0.3 * np.sin(2 * np.pi * (150 + 10 * (seed % 30)) * t) + 0.02 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())


def _evaluation_file(dialog: str, utts: list[str], codes: dict[str, str], rng: random.Random) -> str:
    """An EmoEvaluation file: header, then per utterance a consensus line and annotator lines (shuffled order)."""
    blocks = []
    for j, utt in enumerate(utts):
        start = 2.0 + j * TURN_GAP_S
        end = start + DURATION_S
        vad = [round(rng.uniform(1, 5), 4) for _ in range(3)]
        code = codes[utt]
        blocks.append(
            f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]\n"
            f"C-E1:\tNeutral state;\t()\n"
            f"C-E2:\tFrustration; Anger;\t()\n"
            f"C-F1:\tNeutral state;\t(a comment)\n"
            f"A-E1:\tval 3; act 2; dom  2;\t()\n"
            f"A-F1:\tval 2; act 3; dom  3;\t()\n"
        )
    rng.shuffle(blocks)
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    return header + "\n".join(blocks) + "\n"


def _transcription_file(dialog: str, utts: list[str]) -> str:
    """A transcription file in time order, with the non-utterance lines the release also contains."""
    lines = []
    for j, utt in enumerate(utts):
        start = 2.0 + j * TURN_GAP_S
        lines.append(f"{utt} [{start:08.4f}-{start + DURATION_S:08.4f}]: Synthetic sentence {j} of {dialog}.")
        if j == 1:
            lines.append("M: breathing")
            lines.append(f"{dialog}_MXX0 [{start + 0.6:08.4f}-{start + 0.8:08.4f}]: [LAUGHTER]")
    return "\n".join(lines) + "\n"


def write_iemocap_release(root: Path, sessions=(1, 2, 3, 4, 5), dialogs_per_session: int = 2,
                          utterances_per_dialog: int = 6, seed: int = 0) -> Path:
    """Write ``root/IEMOCAP_full_release/Session{n}/...`` and return the release folder (what adapters take).

    Layout (as in the official release): ``Session{n}/dialog/EmoEvaluation/<dialog>.txt``,
    ``Session{n}/dialog/transcriptions/<dialog>.txt``, ``Session{n}/sentences/wav/<dialog>/<utterance>.wav``,
    plus the ``Categorical`` sub-folder of EmoEvaluation that readers must not mistake for a dialog.
    """
    release = Path(root) / "IEMOCAP_full_release"
    codes = utterance_codes(sessions, dialogs_per_session, utterances_per_dialog, seed)
    rng = random.Random(seed)
    wav_seed = seed * 100_000
    for session in sessions:
        base = release / f"Session{session}"
        (base / "dialog" / "EmoEvaluation" / "Categorical").mkdir(parents=True, exist_ok=True)
        (base / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        for dialog in dialog_names(session, dialogs_per_session):
            utts = utterance_ids(dialog, utterances_per_dialog)
            (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(_evaluation_file(dialog, utts, codes, rng))
            (base / "dialog" / "EmoEvaluation" / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
                "".join(f"{u} :Neutral state; ()\n" for u in utts))
            (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(_transcription_file(dialog, utts))
            for utt in utts:
                wav_seed += 1
                write_wav(base / "sentences" / "wav" / dialog / f"{utt}.wav", wav_seed)
    return release
