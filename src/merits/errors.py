"""The errors merits raises on bad input. Each message names what is wrong and where."""


class MeritsError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataError(MeritsError, ValueError):
    """A corpus, manifest or data file is missing, malformed or inconsistent."""


class ConfigError(MeritsError, ValueError):
    """A configuration file or override is invalid."""


class ModelNotFoundError(MeritsError, OSError):
    """A model named by id or path cannot be loaded on this machine."""
