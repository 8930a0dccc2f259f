"""Audio input: every container we promise, resampling, cutting, down-mixing, and every bad-input case."""

from pathlib import Path

import numpy as np
import pytest

import av
import soundfile as sf

from conftest import shared
from merits.audio import AudioConfig, AudioError, check_audio, load_audio, load_utterance
from merits.errors import ConfigError, DataError


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * sr / len(x))


def write_av(path: Path, x: np.ndarray, sr: int, codec: str) -> Path:
    """Encode mono float audio with FFmpeg (PyAV, whose wheels ship the mp3 and aac encoders) into ``path``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sr)
        stream.layout = "mono"
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame_size = stream.codec_context.frame_size or 1024
        for s in range(0, len(x), frame_size):
            chunk = x[s:s + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate = sr
            frame.pts = s
            for packet in stream.encode(_convert(frame, fmt, sr)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _convert(frame, fmt: str, sr: int):
    import av

    if fmt == "flt":
        return frame
    return av.AudioResampler(format=fmt, layout="mono", rate=sr).resample(frame)[0]


# ------------------------------------------------------------------------------------------ decoding
def test_wav_16k_round_trip(tmp_path):
    x = tone(1.0, 16000)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == (16000,)
    assert np.abs(y - x).max() < 1e-3
    assert -1.0 <= y.min() and y.max() <= 1.0


def test_wav_22050_is_resampled_to_16k(tmp_path):
    sf.write(tmp_path / "a.wav", tone(2.0, 22050, freq=300.0), 22050)
    y = load_audio(tmp_path / "a.wav")
    assert y.shape == (32000,)
    assert abs(peak_hz(y, 16000) - 300.0) < 2.0


def test_other_target_rate(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 16000), 16000)
    assert load_audio(tmp_path / "a.wav", sample_rate=8000).shape == (8000,)


def test_flac(tmp_path):
    x = tone(0.5, 16000)
    sf.write(tmp_path / "a.flac", x, 16000)
    y = load_audio(tmp_path / "a.flac")
    assert y.shape == x.shape and np.abs(y - x).max() < 1e-3


def test_mp3(tmp_path):
    path = write_av(tmp_path / "a.mp3", tone(1.0, 16000, freq=500.0), 16000, "libmp3lame")
    y = load_audio(path)
    assert abs(len(y) - 16000) < 0.1 * 16000  # encoder delay / padding: a few ms
    assert abs(peak_hz(y, 16000) - 500.0) < 3.0


def test_mp4_audio_track(tmp_path):
    path = write_av(tmp_path / "clip.mp4", tone(1.0, 16000, freq=500.0), 16000, "aac")
    y = load_audio(path)
    assert abs(len(y) - 16000) < 0.15 * 16000
    assert abs(peak_hz(y, 16000) - 500.0) < 3.0
    cut = load_audio(path, start=0.25, end=0.75)
    assert abs(len(cut) - 8000) <= 1


def test_start_end_cut_takes_the_right_samples(tmp_path):
    x = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)  # a ramp: the value tells the position
    sf.write(tmp_path / "ramp.wav", x, 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "ramp.wav", start=0.25, end=0.5)
    assert y.shape == (4000,)
    np.testing.assert_allclose(y, x[4000:8000], atol=1e-6)
    np.testing.assert_allclose(load_audio(tmp_path / "ramp.wav", start=0.75), x[12000:], atol=1e-6)
    assert load_audio(tmp_path / "ramp.wav", start=float("nan"), end=float("nan")).shape == (16000,)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(0.5, 16000, amp=0.4), tone(0.5, 16000, freq=1000.0, amp=0.2)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "s.wav")
    assert y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_real_emodb_clip():
    y = load_audio(shared("emodb", "wav", "03a01Fa.wav"))
    assert y.shape == (32000,) and np.isfinite(y).all() and np.abs(y).max() > 0.01


# ------------------------------------------------------------------------------------------ bad input
def test_end_beyond_the_file_names_it(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"a\.wav.*end 1\.500 s is beyond the end of the file \(1\.000 s\)"):
        load_audio(tmp_path / "a.wav", start=0.5, end=1.5)
    with pytest.raises(AudioError, match="not after start"):
        load_audio(tmp_path / "a.wav", start=0.5, end=0.5)
    assert load_audio(tmp_path / "a.wav", end=1.005).shape == (16000,)  # rounding slack


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found") as e:
        load_audio(tmp_path / "nope.wav")
    assert isinstance(e.value, DataError)


def test_unreadable_file(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"\x00\x01garbage bytes, not audio" * 50)
    with pytest.raises(AudioError, match=r"junk\.wav: cannot decode"):
        load_audio(tmp_path / "junk.wav")


def test_empty_file(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    x = load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio \(0 samples\)"):
        check_audio(x, tmp_path / "empty.wav", 0.1)


def test_all_zero(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="all zeros"):
        check_audio(load_audio(tmp_path / "silent.wav"), tmp_path / "silent.wav", 0.1)


def test_nan_samples(tmp_path):
    x = tone(0.5, 16000)
    x[100:110] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        check_audio(load_audio(tmp_path / "nan.wav"), tmp_path / "nan.wav", 0.1)


def test_too_short(tmp_path):
    sf.write(tmp_path / "short.wav", tone(0.05, 16000), 16000)
    with pytest.raises(AudioError, match=r"too short \(0\.050 s < min_seconds 0\.1 s\)"):
        check_audio(load_audio(tmp_path / "short.wav"), tmp_path / "short.wav", 0.1)
    check_audio(load_audio(tmp_path / "short.wav"), tmp_path / "short.wav", 0.01)


def test_load_utterance_names_the_utterance(tmp_path):
    cfg = AudioConfig()
    with pytest.raises(AudioError, match=r"utterance 'u7': audio .*gone\.wav: file not found"):
        load_utterance({"utterance_id": "u7", "audio_path": str(tmp_path / "gone.wav"), "start": None, "end": None}, cfg)
    with pytest.raises(AudioError, match=r"utterance 'u8'.*no audio_path"):
        load_utterance({"utterance_id": "u8", "audio_path": "", "start": None, "end": None}, cfg)


def test_audio_config_checks_policy():
    with pytest.raises(ConfigError, match="on_error"):
        AudioConfig(on_error="ignore")
