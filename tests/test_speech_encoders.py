"""Speech encoders: one contract, (layers, dim) float32 per utterance, on real EmoDB clips and the MOSI table."""

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import shared
from merits.audio import load_audio
from merits.encoders.speech import (
    SpeechEncoder,
    SpeechEncoderConfig,
    build_speech_encoder,
    register_speech_encoder,
    select_layers,
)
from merits.errors import ConfigError, DataError, ModelNotFoundError



@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Two real EmoDB clips (22,050 Hz, 2.0 s) decoded to 16 kHz."""
    wav = shared("emodb", "wav")
    return [load_audio(wav / name) for name in ("03a01Fa.wav", "08a01Wa.wav")]


@pytest.fixture(scope="module")
def whisper():
    return build_speech_encoder(SpeechEncoderConfig(kind="whisper"))


def check_contract(encoder: SpeechEncoder, clips, layers: int, dim: int) -> np.ndarray:
    assert (encoder.num_layers, encoder.dim) == (layers, dim)
    out = encoder.encode(clips[0], 16000)
    assert out.shape == (layers, dim) and out.dtype == np.float32 and np.isfinite(out).all()
    other = encoder.encode(clips[1], 16000)
    assert not np.allclose(out, other)  # different speech, different features
    assert isinstance(encoder.name, str) and encoder.name
    assert isinstance(encoder.fingerprint(), dict)
    return out


# ------------------------------------------------------------------------------------------ openSMILE
def test_opensmile_egemaps(clips):
    enc = build_speech_encoder(SpeechEncoderConfig(kind="opensmile"))
    out = check_contract(enc, clips, 1, 88)
    assert enc.name == "opensmile-eGeMAPSv02"
    # the rate the audio arrives at does not matter: it is resampled to 16 kHz first
    native = load_audio(shared("emodb", "wav", "03a01Fa.wav"), sample_rate=22050)
    np.testing.assert_allclose(enc.encode(native, 22050), out, rtol=0.05, atol=0.05)


def test_opensmile_compare(clips):
    enc = build_speech_encoder(SpeechEncoderConfig(kind="opensmile", model="ComParE_2016"))
    check_contract(enc, clips, 1, 6373)


def test_opensmile_unknown_feature_set():
    with pytest.raises(ConfigError, match="unknown openSMILE feature set 'eGeMAPS99'"):
        build_speech_encoder(SpeechEncoderConfig(kind="opensmile", model="eGeMAPS99"))


# ------------------------------------------------------------------------------------------ Whisper
def test_whisper_packaged_all_layers(whisper, clips):
    out = check_contract(whisper, clips, 5, 384)  # tiny: embeddings + 4 layers, d_model 384
    assert whisper.name == "whisper-tiny.en"
    # mean over the ceil(2.0 s * 50) = 100 frames that hold audio, not the 30 s padding
    states = whisper._states([clips[0]])  # (5, 1, 1500, 384)
    frames = math.ceil(len(clips[0]) / 16000 * 50)
    np.testing.assert_allclose(out, states[:, 0, :frames].mean(1), rtol=1e-4, atol=1e-5)
    assert not np.allclose(out, states[:, 0].mean(1), atol=1e-3)
    # batching is exact: every clip is padded to 30 s either way
    batch = whisper.encode_batch(clips, 16000)
    np.testing.assert_allclose(batch[0], out, rtol=1e-4, atol=1e-4)


def test_whisper_weights_read_from_ctranslate2_match_ctranslate2(whisper, clips):
    """The packaged weights are CTranslate2; we read them into PyTorch to get every layer. Same final output."""
    import ctranslate2 as ct2

    from merits.encoders.speech import resolve_whisper

    model = ct2.models.Whisper(str(resolve_whisper(None)[1]), device="cpu", compute_type="float32")
    mel = whisper._features([clips[0]], sampling_rate=16000, return_tensors="np").input_features
    reference = np.array(model.encode(ct2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True))
    ours = whisper._states([clips[0]])[-1]  # (1, 1500, 384)
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_whisper_long_audio_is_windowed(whisper, clips):
    long = np.concatenate([clips[0]] * 16)  # 32 s: two windows of 30 s and 2 s
    out = whisper.encode(long, 16000)
    assert out.shape == (5, 384) and np.isfinite(out).all()


def test_whisper_layer_selection(whisper, clips):
    from merits.encoders.speech import WhisperSpeechEncoder

    last = WhisperSpeechEncoder(SpeechEncoderConfig(kind="whisper", layers="last"))
    assert (last.num_layers, last.dim) == (1, 384)
    np.testing.assert_allclose(last.encode(clips[0], 16000)[0], whisper.encode(clips[0], 16000)[-1], atol=1e-4)
    assert last.fingerprint() != whisper.fingerprint()


def test_whisper_transformers_checkpoint_by_path(tmp_path, clips):
    """Any Whisper checkpoint in transformers format (here a tiny random one) works by path, all layers."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=64,
                           num_mel_bins=80, max_source_positions=1500, max_target_positions=16,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(config).save_pretrained(tmp_path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp_path)
    enc = build_speech_encoder(SpeechEncoderConfig(kind="whisper", model=str(tmp_path)))
    check_contract(enc, clips, 3, 16)


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_whisper_ctranslate2_checkpoint_by_path(tmp_path, quantization):
    """A faster-whisper (CTranslate2) model directory, full precision or int8, reads back to the same encoder."""
    import ctranslate2 as ct2

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from merits.encoders.speech import whisper_encoder_from_ctranslate2

    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=80)
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    ct2.converters.TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "ct2"), quantization=quantization)
    ours = whisper_encoder_from_ctranslate2(tmp_path / "ct2")
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        diff = (ours(mel).last_hidden_state - hf.model.encoder(mel).last_hidden_state).abs().max().item()
    assert diff < (1e-5 if quantization == "float32" else 2e-2)
    enc = build_speech_encoder(SpeechEncoderConfig(kind="whisper", model=str(tmp_path / "ct2")))
    assert (enc.num_layers, enc.dim, enc.name) == (3, 32, "whisper-ct2")


def test_whisper_missing_model():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        build_speech_encoder(SpeechEncoderConfig(kind="whisper", model="/no/such/whisper"))
    with pytest.raises(ModelNotFoundError, match=r"(?s)openai/whisper-large-v3.*tiny\.en"):
        build_speech_encoder(SpeechEncoderConfig(kind="whisper", model="openai/whisper-large-v3"))


# ------------------------------------------------------------------------------------------ HF SSL
def test_hf_tiny_wavlm_by_path(tiny_wavlm, clips):
    enc = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm))
    out = check_contract(enc, clips, 3, 32)  # CNN/projection output + 2 transformer layers
    two = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm, layers="0,-1"))
    assert two.num_layers == 2
    np.testing.assert_allclose(two.encode(clips[0], 16000), out[[0, 2]], atol=1e-5)


def test_hf_hub_id_that_cannot_be_loaded():
    with pytest.raises(ModelNotFoundError, match=r"(?s)microsoft/wavlm-base-plus.*huggingface-cli download"):
        build_speech_encoder(SpeechEncoderConfig(kind="hf", model="microsoft/wavlm-base-plus"))


def test_hf_needs_a_model():
    with pytest.raises(ConfigError, match="needs model"):
        build_speech_encoder(SpeechEncoderConfig(kind="hf"))


# ------------------------------------------------------------------------------------------ precomputed
def test_precomputed_mosi_table():
    table = shared("mosi", "mosi_utterances.csv")
    enc = build_speech_encoder(SpeechEncoderConfig(kind="precomputed", model=str(table)))
    assert (enc.num_layers, enc.dim, enc.needs_audio, enc.id_column) == (1, 73, False, "utt_id")
    assert enc.columns == [f"a{i}" for i in range(73)]  # not the other columns that start with "a"
    v = enc.lookup("1DmNV9C1hbY_10")
    assert v.shape == (1, 73) and v.dtype == np.float32
    assert v[0, 0] == pytest.approx(174.95)
    assert enc.missing(["1DmNV9C1hbY_10", "nope_1"]) == ["nope_1"]
    with pytest.raises(DataError, match=r"utterance 'nope_1' is not in the feature table .*mosi_utterances\.csv"):
        enc.lookup("nope_1")
    with pytest.raises(TypeError, match="looked up"):
        enc.encode(np.zeros(16000, np.float32), 16000)


def test_precomputed_options(tmp_path):
    (tmp_path / "f.csv").write_text("id,feat_0,feat_1,label\nx,1.0,2.0,3\ny,4.0,,5\n")
    enc = build_speech_encoder(SpeechEncoderConfig(kind="precomputed", model=str(tmp_path / "f.csv"),
                                                   id_column="id", feature_columns=r"feat_\d+"))
    assert enc.dim == 2
    np.testing.assert_array_equal(enc.lookup("x"), [[1.0, 2.0]])
    with pytest.raises(DataError, match="'y'.*non-finite"):
        enc.lookup("y")
    with pytest.raises(DataError, match="no id column"):
        build_speech_encoder(SpeechEncoderConfig(kind="precomputed", model=str(tmp_path / "f.csv")))


# ------------------------------------------------------------------------------------------ CARE, registry
def test_care_explains_missing_weights_and_where_they_plug_in():
    with pytest.raises(ModelNotFoundError, match=r"CARE.*no public weights.*register_speech_encoder\('care'"):
        build_speech_encoder(SpeechEncoderConfig(kind="care"))


def test_registry_and_unknown_kind():
    class Constant(SpeechEncoder):
        name, num_layers, dim = "constant", 1, 2

        def __init__(self, cfg):
            self.cfg = cfg

        def fingerprint(self):
            return {"kind": "constant"}

        def encode(self, audio, sample_rate):
            return np.ones((1, 2), np.float32)

    register_speech_encoder("constant-test", Constant)
    assert build_speech_encoder({"kind": "constant-test"}).encode(np.zeros(10), 16000).shape == (1, 2)
    with pytest.raises(ConfigError, match="unknown speech encoder kind 'nope'"):
        build_speech_encoder(SpeechEncoderConfig(kind="nope"))
    with pytest.raises(ConfigError, match="pooling"):
        SpeechEncoderConfig(pooling="max")


def test_select_layers():
    assert select_layers("all", 3) == [0, 1, 2]
    assert select_layers("last", 3) == [2]
    assert select_layers("0, -1", 5) == [0, 4]
    with pytest.raises(ConfigError, match="layers 0..2"):
        select_layers("3", 3)
    with pytest.raises(ConfigError, match="comma-separated"):
        select_layers("top", 3)
