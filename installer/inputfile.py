"""Reading a file the user gave the installer (inventory, aicc.yml, secrets.yml, a password file) as
UTF-8 text: every problem is an InputError (exit 2) naming the file, the line of the first bad byte and
the fix. The checks themselves are aicc.appliance.textfile's, shared with the appliance and hardening.
"""

from __future__ import annotations

from pathlib import Path

from aicc.appliance.textfile import TextFileError, read_text_file
from aicc.installer.errors import InputError


def read_input_file(path: Path, what: str, *, missing_fix: str | None = None) -> str:
    """The text of `path`, the user's `what` ("inventory", "settings file" ...); `missing_fix` says how to
    get one when there is none."""
    try:
        return read_text_file(path)
    except TextFileError as exc:
        raise input_error(exc, what, missing_fix=missing_fix) from None


def input_error(exc: TextFileError, what: str, *, missing_fix: str | None = None) -> InputError:
    if exc.kind == "missing":
        return InputError(f"{what} not found", where=exc.where, fix=missing_fix)
    if exc.kind == "unreadable":
        return InputError(f"cannot read {what}: {exc.message}", where=exc.where)
    return InputError(f"{what} is {exc.message}", where=exc.where, fix=exc.fix)
