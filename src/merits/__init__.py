"""merits: emotion recognition in conversations from speech and text (MERITS-L)."""

__version__ = "0.1.0"
