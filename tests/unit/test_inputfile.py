"""Reading a user's text file: every hostile file is one clear error naming the file and line, never a
traceback; UTF-8 text (Chinese comments, a byte-order mark, CRLF) is read as it is."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest

from aicc.appliance.documents import DocumentError, read_document
from aicc.appliance.textfile import TextFileError, decode_text, read_text_file
from aicc.installer.errors import EXIT_USAGE, InputError
from aicc.installer.inputfile import read_input_file
from tests.unit.hostile_files import HOSTILE, Hostile, write

GOOD_TEXT = [
    ("chinese-comments", "# 站点设置：北京呼叫中心\nsite_name: bj  # 注释\n", "site_name: bj  # 注释"),
    ("utf8-bom", codecs.BOM_UTF8.decode("utf-8") + "site_name: bj\n", "site_name: bj"),
    ("crlf", "a: 1\r\nb: 2\r\n", "b: 2"),
    ("tabs-and-form-feed", "a:\t1\n\f\n", "a:\t1"),
    ("empty", "", ""),
    ("emoji-and-accents", "# café ☎ 📞\n", "café ☎ 📞"),
]


@pytest.mark.parametrize(("name", "text", "part"), GOOD_TEXT, ids=[g[0] for g in GOOD_TEXT])
def test_utf8_text_is_read(tmp_path: Path, name: str, text: str, part: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if name != "utf8-bom" else codecs.BOM_UTF8 + text[1:].encode())
    got = read_text_file(path)
    assert part in got
    assert not got.startswith("\ufeff")
    assert read_input_file(path, "inventory") == got == read_document(path, "flow")


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_file_names_the_file_line_and_fix(tmp_path: Path, case: Hostile) -> None:
    path = write(tmp_path, case, "inventory.ini")
    with pytest.raises(TextFileError) as core:
        read_text_file(path)
    assert case.says in str(core.value)
    assert core.value.line == case.line and core.value.fix
    with pytest.raises(InputError) as err:
        read_input_file(path, "inventory")
    text = str(err.value)
    assert f"{path}:{case.line}: inventory is " in text and case.says in text and "fix: " in text
    assert err.value.exit_code == EXIT_USAGE
    with pytest.raises(DocumentError) as doc:
        read_document(path, "flow")
    assert doc.value.where == f"{path}:{case.line}"
    assert case.says in doc.value.problems[0][1] and "fix:" in doc.value.problems[0][1]


def test_missing_folder_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        read_input_file(tmp_path / "nope.ini", "inventory", missing_fix="run `aicc init`")
    assert str(err.value) == f"{tmp_path / 'nope.ini'}: inventory not found\n  fix: run `aicc init`"
    with pytest.raises(InputError, match="inventory is a folder, not a file"):
        read_input_file(tmp_path, "inventory")
    with pytest.raises(InputError, match="cannot read inventory: Not a directory"):
        read_input_file(Path(os.devnull) / "x", "inventory")
    with pytest.raises(DocumentError, match="cannot read the flow: a folder, not a file"):
        read_document(tmp_path, "flow")
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.ini"
        locked.write_text("x")
        locked.chmod(0)
        with pytest.raises(InputError, match="cannot read inventory: Permission denied"):
            read_input_file(locked, "inventory")


def test_an_endless_or_huge_file_is_cut_short(tmp_path: Path) -> None:
    with pytest.raises(TextFileError, match="larger than 1 MiB") as err:
        read_text_file(Path("/dev/zero"), limit=2**20)
    assert err.value.kind == "too-large"
    big = tmp_path / "big.yml"
    big.write_bytes(b"# x\n" * (2**18 + 1))
    with pytest.raises(TextFileError, match="larger than 1 MiB"):
        read_text_file(big, limit=2**20)


def test_column_counts_characters_not_bytes() -> None:
    data = "# 北京 x\n# 站点 é".encode() + b"\xff"
    with pytest.raises(TextFileError) as err:
        decode_text(data, Path("f"))
    assert (err.value.line, err.value.column) == (2, 7)  # "# 站点 é" is 6 characters, 10 bytes
