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


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with the real MiniLM tokenizer, saved as a local model directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from merits.encoders.text import resolve_model

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


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
