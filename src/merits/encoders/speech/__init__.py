"""Frozen speech encoders (moved from merits/encoders/speech.py; split into one module per back-end next)."""

from merits.encoders.speech.base import *  # noqa: F401,F403
from merits.encoders.speech.base import _ct2_variables, _safe  # noqa: F401
