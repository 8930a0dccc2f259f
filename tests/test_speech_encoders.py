"""Speech encoders: one contract, (layers, dim) float32 per utterance, on real EmoDB clips and the MOSI table."""

import math

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

    from merits.encoders.speech.ctranslate2 import whisper_encoder_from_ctranslate2

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


@pytest.fixture(scope="module")
def tiny_wavlm_layernorm(tmp_path_factory) -> str:
    """A tiny random WavLM whose CNN feature encoder uses LayerNorm (as wavlm-large, wav2vec2-large-lv60): padding
    is exact for it, so it batches clips of different lengths with an attention mask."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    path = tmp_path_factory.mktemp("tiny-wavlm-layer")
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(32, 32), conv_stride=(5, 5), conv_kernel=(10, 3), feat_extract_norm="layer",
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    WavLMModel(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True, do_normalize=True).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def uneven_clips() -> list[np.ndarray]:
    """Seven real EmoDB speech clips cut to different lengths, 0.5 s to 3.5 s (two clips joined for the long ones)."""
    wav = shared("emodb", "wav")
    names = ["03a01Fa.wav", "08a01Wa.wav", "03b02Na.wav", "09b01Wb.wav", "11b09Ad.wav", "13a05Aa.wav", "15b10Nc.wav", "16a07La.wav"]
    audio = [load_audio(wav / n) for n in names]
    lengths = [0.5, 3.5, 1.3, 2.0, 0.77, 2.9, 1.6]  # not sorted: encode_batch must keep the order
    return [np.concatenate([audio[k], audio[k + 1]])[: int(16000 * s)] for k, s in enumerate(lengths)]


def one_by_one(encoder, clips) -> np.ndarray:
    return np.stack([encoder.encode(c, 16000) for c in clips])


@pytest.mark.parametrize("chunk_seconds", [30.0, 1.0])  # 1.0: long clips become several windows, batched with others
def test_hf_batched_equals_one_by_one(tiny_wavlm_layernorm, uneven_clips, chunk_seconds):
    enc = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm_layernorm, batch_size=4,
                                                   chunk_seconds=chunk_seconds))
    assert enc.pads_exactly and enc.pads_batches
    single = one_by_one(enc, uneven_clips)                       # (7, 3, 32)
    batched = np.stack(enc.encode_batch(uneven_clips, 16000))    # padded batches of 4, longest first
    assert batched.shape == (7, 3, 32) and batched.dtype == np.float32
    assert np.abs(batched - single).max() < 1e-4
    assert not np.allclose(batched[0], batched[1], atol=1e-3)    # outputs stay with their clips


def test_hf_padded_batch_pools_real_frames_only(tiny_wavlm_layernorm, uneven_clips):
    """The pooled sum covers the real frames of each clip (from the sample mask), not the padded ones."""
    enc = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm_layernorm))
    short, long = uneven_clips[0], uneven_clips[1]
    _, frames = enc._pooled_sums([long, short])
    import torch
    expect = enc._model._get_feat_extract_output_lengths(torch.tensor([len(long), len(short)])).tolist()
    assert frames.tolist() == expect and expect[1] < expect[0]


def test_hf_group_norm_model_is_not_padded(tiny_wavlm, uneven_clips):
    """wav2vec2-base-style models (GroupNorm over time in the CNN, no attention mask) would change under padding;
    they batch only windows of equal length, so batched still equals one-by-one."""
    enc = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm, batch_size=4))
    assert not enc.pads_exactly and not enc.pads_batches
    clips = uneven_clips[:3] + [uneven_clips[0].copy()]  # two of equal length: those share a forward pass
    assert enc._groups([len(c) for c in clips]) == [[1], [2], [0, 3]]
    np.testing.assert_allclose(np.stack(enc.encode_batch(clips, 16000)), one_by_one(enc, clips), atol=1e-5)
    enc.pads_exactly = True  # what padding would do to such a model: different features (why it is not done)
    assert np.abs(np.stack(enc.encode_batch(clips, 16000)) - one_by_one(enc, clips)).max() > 1e-3


def test_device_auto_resolves_here_and_is_not_in_the_cache_key(tiny_wavlm, tmp_path):
    import pandas as pd
    import torch

    from merits.audio import AudioConfig
    from merits.data.manifest import Manifest
    from merits.runtime import resolve_device
    from merits.features import cache_key

    assert SpeechEncoderConfig().device == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device("cpu").type == "cpu"
    auto = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm))
    cpu = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm, device="cpu", batch_size=2))
    assert auto.device.type == expected and next(auto._model.parameters()).device.type == expected
    rows = [{"utterance_id": "u0", "conversation_id": "c0", "turn": 0, "split": "train", "text": "", "label": "a",
             "audio_path": str(shared("emodb", "wav", "03a01Fa.wav")), "start": "", "end": ""}]
    manifest = Manifest("toy", ("a",), pd.DataFrame(rows))
    assert "device" not in auto.fingerprint()
    assert cache_key(manifest, auto, AudioConfig()) == cache_key(manifest, cpu, AudioConfig())  # nor batch_size
    for kind in ("whisper", "opensmile"):
        a = build_speech_encoder(SpeechEncoderConfig(kind=kind))
        b = build_speech_encoder(SpeechEncoderConfig(kind=kind, device="cpu"))
        assert cache_key(manifest, a, AudioConfig()) == cache_key(manifest, b, AudioConfig())


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
def test_care_without_a_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"CARE checkpoint directory.*no weights.*merits care pretrain"):
        build_speech_encoder(SpeechEncoderConfig(kind="care"))
    with pytest.raises(ModelNotFoundError, match="CARE checkpoint"):
        build_speech_encoder(SpeechEncoderConfig(kind="care", model=str(tmp_path)))


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
