"""Files a user may pass where a text file is expected, each with what the error must say.

Shared by the tests of every reader (installer inventory, settings and secrets, hardening waivers,
IVR flows, bot definitions): none may end in a traceback.
"""

from __future__ import annotations

import codecs
import random
from pathlib import Path
from typing import NamedTuple


class Hostile(NamedTuple):
    name: str
    data: bytes
    says: str  # a fragment of the message
    line: int | None  # the line the error names (file:LINE), None when it names the file only


HOSTILE: list[Hostile] = [
    Hostile(
        "random-binary",
        b"\x7fELF\x02\x01\x01\x00" + random.Random(16).randbytes(2048),
        "not a text file (binary data): byte 0x02 at line 1, column 5",
        1,
    ),
    Hostile("random-bytes", random.Random(1123).randbytes(4096), "not a text file (binary data): byte", 1),
    Hostile(
        "png-header",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
        "not a text file (binary data): byte 0x89 at line 1, column 1",
        1,
    ),
    Hostile(
        "utf16-with-bom",
        "[sip_proxy]\nh1 ansible_host=10.0.0.1\n".encode("utf-16"),
        "UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8",
        1,
    ),
    Hostile(
        "utf32-with-bom",
        codecs.BOM_UTF32_LE + "x: 1\n".encode("utf-32-le"),
        "UTF-32 text",
        1,
    ),
    Hostile(
        "latin1-accent-line-3",
        "# site\n# owner\n# caf\u00e9 du port\nsite_name: x\n".encode("latin-1"),
        "not UTF-8 text: byte 0xe9 at line 3, column 6",
        3,
    ),
    Hostile(
        "gbk-chinese-line-2",
        "# aicc\n# \u5317\u4eac\u7ad9\u70b9\n".encode("gbk"),
        "not UTF-8 text: byte 0xb1 at line 2, column 3",
        2,
    ),
    Hostile(
        "nul-in-the-middle",
        b"# one\n# two\n# three\n# four\n# fi\x00ve\n# six\n",
        "not a text file (binary data): byte 0x00 at line 5, column 5",
        5,
    ),
    Hostile(
        "control-character",
        b"# one\n# \x1b[31mred\n",
        "not a text file: control character byte 0x1b at line 2, column 3",
        2,
    ),
    Hostile(
        "truncated-utf8",
        "# \u7ad9\u70b9\n".encode()[:-2],
        "not UTF-8 text: byte 0xe7 at line 1, column 4",
        1,
    ),
]


def write(folder: Path, case: Hostile, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(case.data)
    return path
