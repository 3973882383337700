"""Reading a text file a person wrote or chose (an inventory, aicc.yml, a flow, a bot definition, a seed
document, a waiver file) as UTF-8 text. Every way that can fail is one TextFileError naming the file, the
line and column of the first bad byte, and the fix: never a UnicodeDecodeError traceback.

Standard library only: the appliance (on the hosts), the installer and hardening all read through it,
each turning TextFileError into its own error type (InputError, DocumentError, CatalogError, ...).

Accepted: UTF-8, with or without a byte-order mark (removed), any line endings. Refused: a missing or
unreadable path, a folder, UTF-16/UTF-32 text, bytes that are not UTF-8 (a GBK or Latin-1 file), binary
content (a NUL byte or another control character but tab, newline, carriage return, form feed and
vertical tab), and anything over MAX_BYTES (no settings file is that large; /dev/zero would be endless).
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Literal

MAX_BYTES = 16 * 1024 * 1024

Kind = Literal["missing", "unreadable", "folder", "too-large", "encoding", "binary"]

_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")
_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
FIX_ENCODING = (
    "save the file as UTF-8 text; a file saved as GBK/GB18030 (Chinese Windows) converts with "
    "`iconv -f GB18030 -t UTF-8 FILE > FILE.utf8`, a Latin-1 one with `iconv -f LATIN1 -t UTF-8 ...`"
)
FIX_BINARY = "this is not a text file (an image, an archive, a program?): pass the text file itself"


class TextFileError(ValueError):
    """Why `path` is not readable UTF-8 text. `message` completes "<the file> is ..." for every kind but
    missing (it says "not found") and unreadable (the system's reason); `line`/`column` are 1-based."""

    def __init__(
        self,
        path: Path,
        kind: Kind,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.path, self.kind, self.message = path, kind, message
        self.line, self.column, self.fix = line, column, fix
        super().__init__(f"{self.where}: {self.reason}")

    @property
    def reason(self) -> str:
        """One sentence about the file: "not found", "cannot read: Permission denied", "not UTF-8 ..."."""
        return f"cannot read: {self.message}" if self.kind == "unreadable" else self.message

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


def read_text_file(path: Path, *, limit: int = MAX_BYTES) -> str:
    """The file's text; TextFileError says what is wrong with it."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise TextFileError(path, "missing", "not found") from None
    except IsADirectoryError:
        raise TextFileError(path, "folder", "a folder, not a file", fix="pass a file in it") from None
    except OSError as exc:
        raise TextFileError(path, "unreadable", exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise TextFileError(
            path,
            "too-large",
            f"larger than {limit // 2**20} MiB: not a text file written by hand",
            fix="pass the file meant here",
        )
    return decode_text(data, path)


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 bytes as text, without a leading byte-order mark; TextFileError at the first bad byte."""
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise TextFileError(
                path,
                "encoding",
                f"{name} text (it starts with a {name} byte-order mark), not UTF-8",
                line=1,
                column=1,
                fix=f"save it as UTF-8: `iconv -f {name} -t UTF-8 FILE > FILE.utf8`",
            )
    data = data.removeprefix(codecs.BOM_UTF8)
    control = _CONTROL.search(data)
    end = control.start() if control else len(data)
    try:
        # No control byte is ever part of a multi-byte UTF-8 sequence: cutting before one is safe.
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    else:
        if control is None:
            return text
        bad = end
    line, column = position(data, bad)
    at = f"byte 0x{data[bad]:02x} at line {line}, column {column}"
    if b"\0" in data:
        kind: Kind = "binary"
        message, fix = f"not a text file (binary data): {at}", FIX_BINARY
    elif bad == end:
        kind, message, fix = "binary", f"not a text file: control character {at}", FIX_BINARY
    else:
        kind, message, fix = "encoding", f"not UTF-8 text: {at}", FIX_ENCODING
    raise TextFileError(path, kind, message, line=line, column=column, fix=fix)


def position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of the byte at `offset`; lines end at \\n."""
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, len(data[start:offset].decode("utf-8", errors="replace")) + 1
