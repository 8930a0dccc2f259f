"""merits: emotion recognition in conversations from speech and text (MERITS-L).

    model = merits.load("models/meld-minilm")   # a run folder or an exported model (merits export)
    model.predict(["I got the job!", "That is wonderful news."]).to_pandas()
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # merits.load and merits.Model are imported on first use: `import merits` (and the CLI) stays light
    if name in ("load", "Model"):
        from merits import api

        return getattr(api, name)
    raise AttributeError(f"module 'merits' has no attribute {name!r}")


__all__ = ["load", "Model", "__version__"]
