"""Time the offline bundle: a build that writes the archive (caches of packages, wheels and models warm,
or everything of the bundle's own dropped with --cold), the same build again with nothing changed (the
ratio against the first is the cache's worth), verify and import; and its size by part, and the .debs
in the closure against the packages the roles name.

    .venv/bin/python bench/bundle_build.py [--cold] [--out /var/tmp/bench-bundle.tar]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from aicc.installer.bundle import build as bundle_build
from aicc.installer.bundle.archive import check_archive
from aicc.installer.bundle.site_import import import_bundle, trusted_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("/var/tmp/bench-bundle.tar"))
    ap.add_argument("--cold", action="store_true", help="drop the bundle's apt cache, stage and hashes first")
    args = ap.parse_args()
    console = Console(stderr=True)
    args.out.unlink(missing_ok=True)
    if args.cold:
        for part in ("apt", "stage", "apt.stamp", "hashes.json"):
            path = bundle_build.CACHE / part
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    first = bundle_build.build(args.out, models=None, with_debs=[], console=console, quiet=True)
    second = bundle_build.build(args.out, models=None, with_debs=[], console=console, quiet=True)
    key, _ = trusted_key(None, None)
    t = time.monotonic()
    verdict = check_archive(args.out, key, version=bundle_build.aicc_version())
    verify_s = time.monotonic() - t
    with tempfile.TemporaryDirectory(prefix="bench-bundle-site-", dir=args.out.parent) as tmp:
        t = time.monotonic()
        imported = import_bundle(args.out, Path(tmp), None, lambda n: None)
        import_s = time.monotonic() - t
    assert verdict.ok and imported.ok, verdict.problems + imported.problems
    d = first.as_dict()
    print(
        f"build ({'cold' if args.cold else 'warm caches'}): {first.seconds['total']:.1f} s  {first.seconds}"
    )
    print(
        f"rebuild, nothing changed: {second.seconds['total']:.1f} s  "
        f"({second.seconds['total'] / first.seconds['total']:.2f} of the first; "
        f"archive kept: {second.unchanged})"
    )
    print(f"verify: {verify_s:.1f} s; import: {import_s:.1f} s  ({d['bytes'] / 2**20 / import_s:.0f} MiB/s)")
    print(
        f"size: {d['bytes'] / 2**30:.2f} GiB, {d['files']} files; by part (MiB): "
        + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(d["bytes_by_part"].items()))
    )  # type: ignore[union-attr]
    print(
        f".debs: {first.debs_total} in the closure for {first.debs_named} packages the roles name "
        f"({first.debs_total / first.debs_named:.1f}x)"
    )


if __name__ == "__main__":
    main()
