"""Report rows as CSV text: a header from the report's columns, one line per row.

`excel=True` is for people who open the file by double-clicking it: a UTF-8 byte order mark (without
it, Excel on a Chinese Windows reads UTF-8 as GBK and queue or agent names turn to mojibake) and
times as "YYYY-MM-DD HH:MM:SS" in the report's time zone, which Excel recognises as dates. In every
mode a text cell that a spreadsheet would run as a formula (starting with = + - @, tab or CR) gets a
leading apostrophe, so a crafted display name cannot become a formula.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def _cell(value: Any, excel: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") if excel else value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(
    row_type: type[DataclassInstance], rows: Iterable[DataclassInstance], *, excel: bool = False
) -> str:
    """CSV text of report rows (dataclass instances of `row_type`); the header is written even when
    there are no rows."""
    columns = [f.name for f in dataclasses.fields(row_type)]
    out = io.StringIO()
    if excel:
        out.write(BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(getattr(row, c), excel) for c in columns])
    return out.getvalue()
