"""Features already computed per utterance (e.g. CMU-MOSI's a0..a72), read from a CSV keyed by utterance id -> (1, columns).

Nothing is computed, so ``SpeechEncoderConfig.device`` does not apply.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from merits.encoders.speech.base import (EXTRACTION_VERSION, SpeechEncoder, SpeechEncoderConfig, _safe,
                                         register_speech_encoder)
from merits.errors import ConfigError, DataError


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


register_speech_encoder("precomputed", PrecomputedFeatures)
