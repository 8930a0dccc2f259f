"""Custom adapter: your own conversations from one CSV or JSON Lines file (``root`` = the file's path).

Columns (CSV header) or keys (one JSON object per line) are exactly the manifest column names:

- required: ``conversation_id``, ``split`` (train / validation / test; may be absent when the option ``split``
  names the split of every row, as for new data to predict), and ``text`` or ``audio_path``;
- ``label`` (empty or absent = unlabelled), ``utterance_id`` (default ``<conversation_id>_<turn>``),
  ``turn`` (default: the file order inside the conversation), ``start``, ``end``, ``speaker``, ``valence``,
  ``arousal``, ``sentiment``.

Audio paths relative to the file's folder are made absolute. Label names come from the option ``labels``
(their order fixes the class ids) or, without it, the sorted distinct labels of the file.
"""

from __future__ import annotations

import codecs
import json
import logging
from io import StringIO
from pathlib import Path

import pandas as pd

from merits.data.manifest import COLUMNS, SPLITS, Manifest, _listing, carve_validation
from merits.errors import DataError

log = logging.getLogger(__name__)

REQUIRED = ("conversation_id", "split")
NUMERIC = ("start", "end", "valence", "arousal")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


# ---------------------------------------------------------------------------------------------- reading
def decode(path: Path, encoding: str | None = None) -> str:
    """The text of ``path``: in ``encoding`` when given; else UTF-16 or UTF-32 when a byte-order mark says so, else
    UTF-8 (with or without a BOM). A file that is none of these is a DataError naming the line and the option."""
    data = path.read_bytes()
    if encoding is None:
        boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                (codecs.BOM_UTF16_BE, "utf-16"))
        encoding = next((enc for bom, enc in boms if data.startswith(bom)), "utf-8-sig")
    try:
        return data.decode(encoding)
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r} (the adapter option encoding)") from None
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid {encoding} (byte {data[e.start:e.start + 1]!r} at offset "
                        f"{e.start}); give the file's encoding with the adapter option encoding, e.g. encoding=cp1252 "
                        "(Windows / Excel) or encoding=latin-1") from None


def _read_csv(path: Path, encoding: str | None) -> tuple[pd.DataFrame, list[str]]:
    try:
        t = pd.read_csv(StringIO(decode(path, encoding)), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:  # not even a header line
        raise DataError(f"custom data {path} holds no rows (the file is empty: not even a header line)") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    return t, [f"line {i + 2}" for i in range(len(t))]  # +2: the header line and 1-based numbering


def _read_jsonl(path: Path, encoding: str | None) -> tuple[pd.DataFrame, list[str]]:
    """One object per line (blank lines allowed); a ``.json`` file may instead hold one list of objects."""
    text = decode(path, encoding)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON: {err}") from None
        where = [f"record {i + 1}" for i in range(len(records))]
    else:
        records, where = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
            where.append(f"line {number}")
    not_objects = [w for w, r in zip(where, records) if not isinstance(r, dict)]
    if not_objects:
        raise DataError(f"{path}: every record must be a JSON object; not one: {_listing(not_objects)}")
    # dtype=object keeps 3 as 3 (not 3.0) when other records lack the key; missing keys and nulls become empty
    # cells, numbers their text, as in a CSV.
    table = pd.DataFrame(records, dtype=object)
    table = table.where(table.notna(), "").map(str) if len(table) else table
    return table, where


def _read(path: Path, encoding: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The file as a string table plus, per row, where it is in the file (for error messages)."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"custom data {path}: expected a .csv or .jsonl file (or .json / .ndjson), got {path.suffix!r}")
    table, where = _read_csv(path, encoding) if kind == "csv" else _read_jsonl(path, encoding)
    if table.empty:
        raise DataError(f"custom data {path} holds no rows")
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda col: col.str.strip()).reset_index(drop=True), where


# ---------------------------------------------------------------------------------------------- checks
def _check_columns(t: pd.DataFrame, path: Path, split: str | None) -> None:
    unknown = [c for c in t.columns if c not in COLUMNS]
    if unknown:
        raise DataError(f"{path}: unknown columns {unknown}; the columns are the manifest's: {list(COLUMNS)}")
    missing = [c for c in REQUIRED if c not in t.columns and not (c == "split" and split)]
    if "text" not in t.columns and "audio_path" not in t.columns:
        missing.append("text or audio_path")
    if missing:
        raise DataError(f"{path}: missing required columns {missing} (see docs/manifest.md, 'custom')")


def _fail_rows(mask: pd.Series, where: list[str], path: Path, what: str, values: pd.Series | None = None) -> None:
    """Raise a DataError naming the first rows where ``mask`` holds, if any."""
    if mask.any():
        rows = [where[i] + (f" ({values.iat[i]!r})" if values is not None else "") for i in mask[mask].index]
        raise DataError(f"{path}: {what}: {_listing(rows)}")


def _turns(t: pd.DataFrame, where: list[str], path: Path) -> pd.Series:
    """Given turns must all be integers; without the column, the file order inside each conversation."""
    if "turn" not in t.columns:
        return t.groupby("conversation_id", sort=False).cumcount()
    turns = pd.to_numeric(t["turn"], errors="coerce")
    _fail_rows(turns.isna() | (turns % 1 != 0), where, path, "turn must be an integer", t["turn"])
    return turns.astype("int64")


def _check_blocks(t: pd.DataFrame, where: list[str], path: Path) -> None:
    """Without a ``turn`` column the file order numbers the turns, so a conversation must be one block of rows: an
    id that comes back after other conversations is an id reused for another dialogue, not more of the same one."""
    conv = t["conversation_id"]
    starts = conv != conv.shift()
    again = starts & conv.duplicated()
    if again.any():
        rows = [f"{where[i]} ({conv.iat[i]!r}, first seen at {where[int(conv[conv == conv.iat[i]].index[0])]})"
                for i in again[again].index]
        raise DataError(f"{path}: a conversation_id comes back after other conversations, so it would join two "
                        f"dialogues: {_listing(rows)}; make conversation ids unique, or give a turn column if the rows "
                        "of one conversation are interleaved on purpose")


def _check_repeated_turns(t: pd.DataFrame, where: list[str], path: Path) -> None:
    """A (conversation_id, turn) pair on several rows: name each pair with all its lines, and say why it happens."""
    repeated = t[t.duplicated(["conversation_id", "turn"], keep=False)]
    if repeated.empty:
        return
    groups = repeated.groupby(["conversation_id", "turn"], sort=False).groups
    shown = [f"{conv!r} turn {turn} (" + ", ".join(where[i] for i in rows) + ")" for (conv, turn), rows in groups.items()]
    splits = sorted(set(repeated["split"]))
    hint = (f"the ids repeat across the splits {splits}: make them unique, e.g. prefix each with its split"
            if repeated.groupby(["conversation_id", "turn"])["split"].nunique().gt(1).any() else
            "if your ids repeat across dialogues (e.g. a scene number per episode), make them unique")
    raise DataError(f"{path}: a turn appears more than once in one conversation: {_listing(shown)}; a "
                    f"conversation_id must name one conversation: {hint}")


def _label_names(t: pd.DataFrame, labels, where: list[str], path: Path) -> tuple[str, ...]:
    """The option ``labels`` (a list or "a,b,c"), checked against the file; else the sorted distinct labels."""
    present = t["label"] if "label" in t.columns else pd.Series("", index=t.index)
    if labels is None:
        return tuple(sorted(set(present) - {""}))
    names = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else [str(s) for s in labels]
    if len(set(names)) != len(names) or "" in names:
        raise DataError(f"custom labels option must list distinct, non-empty names; got {names}")
    unknown = (present != "") & ~present.isin(names)
    if unknown.any():
        counts = present[unknown].value_counts()
        first = {label: where[unknown[present == label].idxmax()] for label in counts.index}
        listed = ", ".join(f"{label!r} ({n} rows, first {first[label]})" for label, n in counts.items())
        # a ready-to-edit map: each unknown label to the known name it most resembles, or to "" (kept unlabelled)
        import difflib

        guess = {label: (difflib.get_close_matches(label.lower(), [n.lower() for n in names], n=1) or [""])[0]
                 for label in counts.index}
        by_lower = {n.lower(): n for n in names}
        pairs = ",".join(f"{label}:{by_lower.get(guess[label], '')}" for label in counts.index)
        raise DataError(f"{path}: {len(counts)} label(s) not among {names}: {listed}. Map them with the adapter "
                        f"option label_map (edit the classes; an empty one keeps those turns unlabelled): "
                        f"-o label_map={pairs}")
    return tuple(names)


def _label_map(option) -> dict[str, str]:
    """The option ``label_map``: a mapping file label -> class name ("" or null: unlabelled, kept as context), or,
    on the command line, ``"happiness:joy,excitement:joy,other:"``."""
    if option is None:
        return {}
    if isinstance(option, dict) and len(option) == 1 and None in option.values() and ":" in next(iter(option)):
        option = f"{next(iter(option))}:"  # "a:b,c:" read as YAML is the mapping {"a:b,c": None}: the same map
    if isinstance(option, str):
        pairs = [item.split(":", 1) for item in option.split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise DataError(f"custom label_map {option!r}: give label:class pairs, e.g. happiness:joy,other: "
                            "(nothing after the colon = unlabelled)")
        option = dict(pairs)
    if not isinstance(option, dict):
        raise DataError(f"custom label_map must map labels to class names, e.g. {{happiness: joy}}; got {option!r}")
    return {str(k).strip(): ("" if v is None else str(v).strip()) for k, v in option.items()}


def _apply_label_map(t: pd.DataFrame, mapping: dict[str, str], path: Path) -> None:
    """Rename labels in place (many-to-one; "" = unlabelled); labels outside the map keep their name."""
    if not mapping or "label" not in t.columns:
        return
    unused = sorted(set(mapping) - set(t["label"]))
    if unused:  # a typo, or a map written for another corpus: worth a word, not a stop
        log.warning("%s: label_map names labels the file does not have: %s", path, _listing(unused))
    t["label"] = t["label"].map(lambda x: mapping.get(x, x))


def _audio_paths(t: pd.DataFrame, base: Path) -> pd.Series:
    """Relative audio paths are relative to the data file's folder."""
    if "audio_path" not in t.columns:
        return pd.Series("", index=t.index)
    return t["audio_path"].map(lambda p: str((base / p).resolve()) if p else "")


# ---------------------------------------------------------------------------------------------- entry point
def build(root=None, labels=None, check_audio: bool = True, name: str | None = None, split: str | None = None,
          encoding: str | None = None, validation_fraction: float | None = None, split_seed: int = 0,
          label_map=None) -> Manifest:
    """Read a CSV / JSONL file of utterances (columns = manifest columns) into a manifest.

    labels: label names in class-id order (list or comma-separated string); a label outside it is an error.
    split: the split of every row of a file without a ``split`` column (a file that has one keeps it).
    check_audio: fail when a named audio file does not exist. name: the data set's name, which the manifest
    carries and the results table is headed by (default: the file's stem, ``calls.csv`` -> ``calls``). encoding: the file's text encoding (default: UTF-8, or UTF-16 / UTF-32
    when the file starts with a byte-order mark). validation_fraction: this share of the training conversations
    (whole conversations, chosen with ``split_seed``) becomes the validation split, for files that have none.
    label_map: file label -> class name, applied before ``labels`` is checked: many-to-one (``{excitement: joy,
    happiness: joy}``), or "" / null for turns to keep unlabelled (context for the conversation stages); recorded
    in the manifest.
    """
    if root is None:
        raise DataError("custom data needs root = the path of a .csv or .jsonl file (see docs/manifest.md)")
    path = Path(root)
    if path.is_dir() and (path / "manifest.json").is_file():  # a manifest saved by merits prepare --out
        return Manifest.load(path)
    if not path.is_file():
        raise DataError(f"custom data file {path} does not exist" + (" (root is a folder; give the file)" if path.is_dir() else ""))
    if split is not None and split not in SPLITS:
        raise DataError(f"custom data option split must be one of {SPLITS}, got {split!r}")
    t, where = _read(path, encoding)
    _check_columns(t, path, split)
    if "split" not in t.columns:
        t["split"] = split
    if validation_fraction is not None:
        if (t["split"] == "validation").any():
            raise DataError(f"custom data {path} has a validation split already; validation_fraction carves one from "
                            "train for files without it")
        chosen = carve_validation(t.loc[t["split"] == "train", "conversation_id"].unique(), float(validation_fraction),
                                  int(split_seed))
        t.loc[t["conversation_id"].isin(chosen), "split"] = "validation"
    _fail_rows(t["conversation_id"] == "", where, path, "empty conversation_id")
    _fail_rows(~t["split"].isin(SPLITS), where, path, f"split must be one of {SPLITS}", t["split"])
    for col in NUMERIC:
        if col in t.columns:
            bad = (t[col] != "") & pd.to_numeric(t[col], errors="coerce").isna()
            _fail_rows(bad, where, path, f"non-numeric {col}", t[col])
    if "turn" not in t.columns:
        _check_blocks(t, where, path)
    t["turn"] = _turns(t, where, path)
    # checked before the utterance ids: ids merits generates (<conversation_id>_<turn>) collide exactly when a turn
    # repeats, and the user should hear of the column they wrote, not of ids they never saw
    _check_repeated_turns(t, where, path)
    generated = t["conversation_id"] + "_" + t["turn"].astype(str)
    t["utterance_id"] = t["utterance_id"].where(t["utterance_id"] != "", generated) if "utterance_id" in t.columns else generated
    _fail_rows(t["utterance_id"].duplicated(keep=False), where, path, "duplicate utterance ids", t["utterance_id"])
    mapping = _label_map(label_map)
    _apply_label_map(t, mapping, path)
    names = _label_names(t, labels, where, path)
    for col in ("text", "label"):  # optional in the file, required in the manifest: absent means empty
        if col not in t.columns:
            t[col] = ""
    t["audio_path"] = _audio_paths(t, path.parent)
    _fail_rows((t["text"] == "") & (t["audio_path"] == ""), where, path, "empty text and no audio_path")
    if check_audio:
        _fail_rows((t["audio_path"] != "") & ~t["audio_path"].map(lambda p: Path(p).is_file()), where, path,
                   "audio files missing", t["audio_path"])
    return Manifest(str(name or path.stem), names, t, str(path.resolve()), label_map=mapping).validate()
