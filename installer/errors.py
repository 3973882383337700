"""Errors a user can act on: what is wrong, where, and how to fix it.

Exit codes (documented in the README): 0 ok, 1 a check or run failed, 2 usage or input error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class AiccError(Exception):
    """An error the CLI prints as one clear message (never a traceback)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.fix = fix

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def as_dict(self) -> dict[str, str | None]:
        return {"error": self.message, "where": self.where, "fix": self.fix}


class InputError(AiccError):
    """Bad input: settings, inventory, arguments. Nothing was changed."""


class RunFailed(AiccError):
    """A check or a run failed on a host."""

    exit_code = EXIT_FAILED
