"""Removing lab folders without ever descending into a mount (a leftover /proc, /dev or /sys bind
inside a half-built image would otherwise let rmtree delete this machine's own files)."""

from __future__ import annotations

import shutil
from pathlib import Path

from aicc.installer.errors import RunFailed


def mounts_under(path: Path, mountinfo: str | None = None) -> list[str]:
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    root = str(path.resolve()).rstrip("/") + "/"
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        # Field 5 is the mount point, with spaces and the like written as octal escapes.
        point = fields[4].encode().decode("unicode_escape")
        if (point + "/").startswith(root):
            found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """rmtree, refusing when anything is mounted below path (it says what to unmount)."""
    if not path.exists():
        return
    mounted = mounts_under(path)
    if mounted:
        raise RunFailed(
            f"will not remove {path}: something is mounted below it: {', '.join(mounted)}",
            where=str(path),
            fix=f"unmount them (`umount -R {mounted[0]}`), then run the command again",
        )
    shutil.rmtree(path, ignore_errors=True)
