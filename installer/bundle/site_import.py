"""`aicc bundle import`: check and unpack a bundle into SITE/bundle, atomically.

The archive is checked and unpacked in the same pass into SITE/.bundle-import; only a bundle with no
problem replaces SITE/bundle (the old one stays until then). The key that signed it is pinned in
SITE/keys/bundle-key.asc: later imports must be signed by the same key unless --key names another.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from aicc.installer.bundle.archive import MANIFEST, Verdict, check_archive
from aicc.installer.bundle.build import aicc_version, trusted_key_of_this_machine
from aicc.installer.errors import InputError

PINNED_KEY = Path("keys") / "bundle-key.asc"


def bundle_dir(site_root: Path) -> Path:
    return site_root / "bundle"


def trusted_key(key_file: Path | None, site_root: Path | None) -> tuple[bytes, str]:
    """The public key to trust and where it came from: --key, the site's pinned key, this machine's own."""
    if key_file is not None:
        try:
            return key_file.read_bytes(), str(key_file)
        except OSError as exc:
            raise InputError(f"cannot read the key: {exc.strerror}", where=str(key_file)) from None
    if site_root is not None and (site_root / PINNED_KEY).is_file():
        return (site_root / PINNED_KEY).read_bytes(), str(site_root / PINNED_KEY)
    own = trusted_key_of_this_machine()
    if own is None:
        raise InputError(
            "no trusted bundle key: this machine built no bundle and the site pins none",
            fix="pass --key with the public key the bundle's builder gave you (bundle-key.asc)",
        )
    return own, "this machine's bundle release key"


def import_bundle(
    archive: Path, site_root: Path, key_file: Path | None, progress: Callable[[int], None]
) -> Verdict:
    if not archive.is_file():
        raise InputError(
            "bundle not found", where=str(archive), fix="pass the path of the .tar `aicc bundle build` wrote"
        )
    key, _ = trusted_key(key_file, site_root)
    size = archive.stat().st_size
    free = shutil.disk_usage(site_root).free
    if free < size + (256 << 20):
        raise InputError(
            f"not enough disk to import the bundle: {size / 2**30:.1f} GiB needed, "
            f"{free / 2**30:.1f} GiB free",
            where=str(site_root),
            fix="free space on that disk, or keep the site on a larger one",
        )
    staging = site_root / ".bundle-import"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    verdict = check_archive(archive, key, version=aicc_version(), extract_to=staging, progress=progress)
    if not verdict.ok:
        shutil.rmtree(staging, ignore_errors=True)
        return verdict
    if verdict.manifest is not None:
        # The verified manifest stays with the bundle: installs publish its build time (its age alert).
        (staging / MANIFEST).write_text(verdict.manifest.model_dump_json(indent=1), encoding="utf-8")
    target = bundle_dir(site_root)
    old = site_root / ".bundle-old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.replace(old)
    staging.replace(target)
    shutil.rmtree(old, ignore_errors=True)
    (site_root / PINNED_KEY).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (site_root / PINNED_KEY).write_bytes(key)
    return verdict
