"""The errors merits raises on bad input. Each message names what is wrong and where."""


class MeritsError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataError(MeritsError, ValueError):
    """A corpus, manifest or data file is missing, malformed or inconsistent."""


class ConfigError(MeritsError, ValueError):
    """A configuration file or override is invalid."""


class ModelNotFoundError(MeritsError, OSError):
    """A model named by id or path cannot be loaded on this machine."""


class DamagedFileError(DataError):
    """A file merits wrote earlier (checkpoint, embeddings, config, cache) is truncated or edited beyond reading."""


def damaged(path, error: Exception, fix: str = "delete it and rerun to rebuild it") -> DamagedFileError:
    return DamagedFileError(f"{path} is damaged and cannot be read ({type(error).__name__}: {error}); {fix}")


def read_json(path, fix: str = "delete it and rerun to rebuild it"):
    """A JSON file merits wrote; a DamagedFileError naming it when it is missing, truncated or edited badly."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise damaged(path, e, fix) from None


def load_safetensors(path, framework: str = "pt", fix: str = "retrain the stage that wrote it"):
    """The tensors of a safetensors file (no code runs on load); a DamagedFileError naming it when it is damaged."""
    try:
        if framework == "numpy":
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError / OSError for bad files
        raise damaged(path, e, fix) from None
