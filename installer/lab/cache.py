"""The image cache over time: images of older recipes pile up (about 270 MB each) until pruned.

Kept apart from image.py on purpose: image.py's own source is part of the image's cache key.
"""

from __future__ import annotations

from pathlib import Path

from aicc.installer.lab.fsutil import remove_tree
from aicc.installer.lab.image import image_dir
from aicc.installer.lab.locks import file_lock
from aicc.installer.lab.state import all_labs, load_state


def images_in_use() -> set[Path]:
    used: set[Path] = set()
    for name in all_labs():
        state = load_state(name)
        if state is not None:
            used.add(Path(state.image).parent)
    return used


def prunable(root: Path) -> list[Path]:
    """Images of other recipes than the current one that no lab on this machine runs on."""
    if not root.is_dir():
        return []
    keep = {image_dir(root), *images_in_use()}
    return sorted(p for p in root.glob("base-*") if p.is_dir() and p not in keep)


def prune(root: Path) -> list[Path]:
    with file_lock(root / ".build.lock"):
        removed = prunable(root)
        for path in removed:
            remove_tree(path)
    return removed
