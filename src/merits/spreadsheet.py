"""CSV files a person opens in a spreadsheet: text cells that a spreadsheet would run as a formula are escaped.

A transcript or a conversation id beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a
formula to Excel, LibreOffice and Google Sheets (CSV injection); OWASP's defence is a leading single quote, which the
spreadsheet shows as text. Applied to the reports merits writes for people (predictions.csv, conversations.csv);
manifest.csv, which merits itself reads back, is data and is written as it is.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value):
    """``'=1+1`` for ``=1+1``; anything that is not a string, or does not start a formula, unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """``table.to_csv(path, index=False)`` with every text cell escaped and quoted (a carriage return inside a
    transcript then stays inside its cell); numbers stay numbers."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(escape_cell)
    safe.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
