import os
from pathlib import Path

import pytest

os.environ.setdefault("MERITS_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def shared(*parts) -> Path:
    """A path under ../shared/data. The tests need that real data: its absence is a failure, not a skip."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real data {path} not present: the tests read ../shared/data beside the project")
    return path


def tiny_bert(path: Path) -> str:
    """A tiny randomly initialised BERT with the real MiniLM tokenizer, saved as a local model directory (also used by
    benchmarks/faults.py, where only the loop is timed, not the model)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from merits.encoders.text import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with the real MiniLM tokenizer, saved as a local model directory."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory) -> str:
    """A tiny randomly initialised WavLM plus its feature extractor, saved as a local model directory."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    path = tmp_path_factory.mktemp("tiny-wavlm")
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(32, 32), conv_stride=(5, 5), conv_kernel=(10, 3),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    WavLMModel(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def iemocap_run(tmp_path_factory, tiny_encoder, tiny_wavlm):
    """The IEMOCAP paper profile trained end to end (Stages I-III + combined, one epoch, seed 0) on a synthetic
    release in the official layout, with audio. Only the weights are swapped for tiny local ones (roberta-large and
    wavlm-base-plus cannot be had here); corpus, speech-encoder kind and stage layout are the profile's.
    Returns (config, run_experiment's result, the run directory)."""
    from fixtures_iemocap import write_iemocap_release

    from merits.experiment import load_experiment
    from merits.pipeline import run_experiment

    tmp = tmp_path_factory.mktemp("iemocap-run")
    release = write_iemocap_release(tmp / "data")
    cfg = load_experiment("iemocap", [f"data.root={release}", "data.options.strict_counts=false",
                                      f"text_encoder.model={tiny_encoder}", f"speech_encoder.model={tiny_wavlm}",
                                      "stage1_text.epochs=1", "stage2_text.epochs=1", "stage1_audio.epochs=1",
                                      "stage2_audio.epochs=1", "stage3.epochs=1", "seeds=[0]", "combined=true",
                                      f"runs_dir={tmp / 'runs'}", f"cache_dir={tmp / 'cache'}", "name=iemocap"])
    return cfg, run_experiment(cfg), tmp / "runs" / "iemocap"
