"""The lab's base image: a minimal Debian 12 root with systemd and SSH, cached by its recipe.

The cache key is a sha256 of the package list and of this file's own source, so any change to how
the image is made builds a new one. The image is built in a temporary folder and renamed into
place, so a crash mid-build never leaves a half image that a later `lab up` would reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aicc.installer.errors import RunFailed
from aicc.installer.lab.fsutil import remove_tree
from aicc.installer.lab.locks import file_lock

CACHE_ENV = "AICC_LAB_CACHE"
DEFAULT_CACHE = Path("/var/cache/aicc/lab")
SUITE = "bookworm"
VARIANT = "minbase"
# What Ansible and the roles need on a target, and no more: systemd as PID 1, SSH, Python with apt.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "sudo",
    "ca-certificates",
    "procps",
)
SOURCES = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
# Each host gets its own ed25519 host key in its overlay; the image carries none.
SSHD_DROPIN = """\
# aicc lab: key-only root login; host keys are generated per host by `aicc lab up`.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""


def cache_root(override: Path | None = None) -> Path:
    if override is not None:
        return override
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE


def recipe() -> dict[str, object]:
    return {"suite": SUITE, "variant": VARIANT, "packages": list(PACKAGES), "sources": list(SOURCES)}


def recipe_hash(source: bytes | None = None) -> str:
    """sha256 of the recipe and of the code that builds it (first 16 hex digits name the folder)."""
    code = source if source is not None else Path(__file__).read_bytes()
    h = hashlib.sha256()
    h.update(json.dumps(recipe(), sort_keys=True).encode())
    h.update(b"\0")
    h.update(code)
    return h.hexdigest()


def image_dir(root: Path) -> Path:
    return root / f"base-{recipe_hash()[:16]}"


def rootfs(root: Path) -> Path:
    return image_dir(root) / "rootfs"


def is_cached(root: Path) -> bool:
    return (image_dir(root) / "recipe.json").is_file() and rootfs(root).is_dir()


def ensure_image(root: Path, log: Path | None = None) -> tuple[Path, bool]:
    """The image's rootfs and whether it was cached; builds it when missing (others wait on a lock)."""
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".build.lock"):
        if is_cached(root):
            return rootfs(root), True
        _remove_stale_builds(root)
        with _build_dir(root) as tmp:
            _build(tmp, log or root / "build.log")
            (tmp / "recipe.json").write_text(
                json.dumps({**recipe(), "sha256": recipe_hash(), "built": time.time()}, indent=2),
                encoding="utf-8",
            )
            tmp.rename(image_dir(root))
    return rootfs(root), False


@contextmanager
def _build_dir(root: Path) -> Iterator[Path]:
    tmp = root / f".tmp-base-{recipe_hash()[:16]}-{os.getpid()}"
    remove_tree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        # After the rename there is nothing left here; after a failure the half image goes away.
        remove_tree(tmp)


def _remove_stale_builds(root: Path) -> None:
    """Temporary folders of builds that crashed (we hold the build lock, so none is in progress)."""
    for stale in root.glob(".tmp-base-*"):
        remove_tree(stale)


def _build(tmp: Path, log: Path) -> None:
    target = tmp / "rootfs"
    cmd = [
        "mmdebstrap",
        # unshare: its /proc, /sys and /dev mounts live in a private mount namespace and vanish
        # with it, so a build killed midway cannot leave mounts inside the cache folder.
        "--mode=unshare",
        f"--variant={VARIANT}",
        "--include=" + ",".join(PACKAGES),
        "--format=directory",
        SUITE,
        str(target),
        *SOURCES,
    ]
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RunFailed(
            f"building the lab base image failed (mmdebstrap exit {proc.returncode}):\n{tail}",
            where=str(log),
            fix="check that deb.debian.org is reachable from this machine, then run `aicc lab up` again",
        )
    _customize(target)


def _customize(target: Path) -> None:
    for key in (target / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    dropin = target / "etc/ssh/sshd_config.d/aicc-lab.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(SSHD_DROPIN, encoding="utf-8")
    # Each host writes its own machine id; an empty file in the image makes that explicit.
    (target / "etc/machine-id").write_text("", encoding="utf-8")
    # apt inside the container rejects lists whose folder looks newer than the clock it trusts.
    stamp = time.mktime((2000, 1, 1, 0, 0, 0, 0, 0, -1))
    os.utime(target / "var/lib/apt/lists", (stamp, stamp))
