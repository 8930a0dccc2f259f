"""The config reference (docs/config.md), generated from the config dataclasses so that it cannot drift.

Every key's default comes from the dataclass and its meaning from the comment beside (or just above) the field in
the source, where the code's readers see it too. ``python -m merits.config_reference > docs/config.md`` rewrites
the page; a test fails when the page and the code disagree.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

# the commands whose config is a dataclass loaded by merits.config.load_config: (title, command, class path)
COMMANDS = (
    ("Experiments", "merits train CONFIG key=value ...", "merits.experiment:ExperimentConfig"),
    ("Transcription", "merits asr MANIFEST --out DIR key=value ...", "merits.asr:ASRConfig"),
    ("Pseudo-labelling", "merits teach CONFIG key=value ...", "merits.teach:TeachConfig"),
    ("Pseudo-labelling at corpus scale", "merits pseudolabel CONFIG key=value ...",
     "merits.teach.corpus:CorpusLabelConfig"),
    ("CARE pretraining", "merits care pretrain MANIFEST --out DIR key=value ...",
     "merits.care.pretrain:CarePretrainConfig"),
    ("Text-encoder pretraining", "merits pretrain MANIFEST --out DIR key=value ...", "merits.pretrain:PretrainConfig"),
    ("The HTTP service", "merits serve RUN_DIR key=value ...", "merits.serve:ServeConfig"),
)
_FIELD = re.compile(r"^(\s+)(\w+)\s*:")


def _comments(cls) -> dict[str, str]:
    """field name -> its comment in ``cls``' own source: the trailing ``# ...`` of its line, the comment lines
    aligned under it, and a comment block just above it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    above: list[str] = []
    current, column = None, None
    for line in lines[1:]:
        stripped = line.strip()
        match = _FIELD.match(line)
        if match and match.group(2) in names:
            current = match.group(2)
            code, hash_, comment = line.partition("  # ")
            out[current] = above + ([comment.strip()] if hash_ else [])
            column = len(code) + 2 if hash_ else None
            above = []
        elif stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if current is not None and column is not None and line.index("#") >= column - 1:
                out[current].append(text)  # continues the comment of the field above
            else:
                above.append(text)
                current = None
        else:  # code, a blank line, a method: a comment block no longer belongs to the next field
            above, current = [], None
            if stripped.startswith("def "):
                break
    return {k: " ".join(v) for k, v in out.items() if v}


def _meaning(cls, name: str) -> str:
    for base in cls.__mro__:
        if dataclasses.is_dataclass(base) and name in {f.name for f in dataclasses.fields(base)}:
            text = _comments(base).get(name)
            if text:
                return text
    return ""


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    return str(value).replace("'", "")


def _type_name(annotation) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return str(text).replace("typing.", "").replace("NoneType", "None")


def rows(cls, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every field of ``cls``, nested sections flattened as ``section.key``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, annotation = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(annotation):
            out += rows(annotation, key + ".")
            continue
        out.append((key, _type_name(f.type).replace(" | ", " or "), _show(_default(f)), _meaning(cls, f.name)))
    return out


def _load(path: str):
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def reference_markdown() -> str:
    lines = ["# Config reference", "",
             "Every key of every command's config, with its default and meaning: generated from the config dataclasses",
             "(`python -m merits.config_reference > docs/config.md`; a test fails when this page and the code differ).",
             "A shipped profile (`src/merits/configs/*.yaml`) sets some of them; `key=value` on the command line sets",
             "any, nested keys with dots (`stage2_text.model.hidden=256`, `data.options.labels=[neg,pos]`). Unknown",
             "keys and ill-typed values are errors that name the key.", ""]
    for title, command, path in COMMANDS:
        lines += [f"## {title}: `{command}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, kind, default, meaning in rows(_load(path)):
            lines.append(f"| `{key}` | {kind} | `{default}` | {meaning.replace('|', '/')} |")
        lines.append("")
    lines += ["## Adapter options: `data.options.KEY=VALUE` (train), `-o KEY=VALUE` (prepare, predict)", "",
              "Each corpus adapter's options with their defaults (their meanings: the adapter's docstring and",
              "docs/manifest.md).", "", "| corpus | option | default |", "|---|---|---|"]
    lines += [f"| `{corpus}` | `{name}` | `{default}` |" for corpus, name, default in adapter_options()]
    return "\n".join(lines) + "\n"


def adapter_options() -> list[tuple[str, str, str]]:
    """(corpus, option, default) of every registered adapter, from its build function's keyword defaults."""
    from merits.data import ADAPTERS, adapter

    out = []
    for corpus in ADAPTERS:
        for name, p in inspect.signature(adapter(corpus)).parameters.items():
            if name != "root":
                out.append((corpus, name, _show(None if p.default is inspect.Parameter.empty else p.default)))
    return out


if __name__ == "__main__":
    print(reference_markdown(), end="")
