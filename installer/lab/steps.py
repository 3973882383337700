"""Step-by-step progress lines with timings (Rich), for people watching `lab up`/`lab down`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


class Steps:
    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False)

    @contextmanager
    def step(self, text: str) -> Iterator[dict[str, str]]:
        """Prints `text ...` then `done (1.2 s)`; the body may add a suffix through the dict."""
        extra: dict[str, str] = {}
        started = time.monotonic()
        if not self.quiet:
            self.console.print(f"[bold]•[/bold] {text} ...", highlight=False)
        try:
            yield extra
        except BaseException:
            if not self.quiet:
                self.console.print(f"  [bold red]failed[/bold red] after {time.monotonic() - started:.1f} s")
            raise
        if not self.quiet:
            note = f" {extra['note']}" if "note" in extra else ""
            self.console.print(
                f"  [green]done[/green] in {time.monotonic() - started:.1f} s{note}", highlight=False
            )

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
