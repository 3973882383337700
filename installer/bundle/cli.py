"""`aicc bundle`: build the offline bundle on a connected machine; verify and import it at the site."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from aicc.installer import output
from aicc.installer.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from aicc.installer.bundle.archive import Verdict

app = typer.Typer(
    help="The offline bundle: every package, wheel, model and binary a site needs, signed, in one file.\n\n"
    "Exit codes: 0 ok; 1 the bundle failed a check (each problem named); 2 bad input.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Public key (bundle-key.asc) to trust. Default: the site's pinned key (import), else the key of "
        "bundles built on this machine.",
    ),
]


@app.command("contents")
def contents_cmd(json_out: JsonOpt = False) -> None:
    """What a bundle holds, read from the roles: the Debian packages each role installs (the one list),
    the models and the wheelhouse. Nothing is fetched."""
    from aicc.installer.bundle.contents import HOST_PREREQUISITES, package_variables
    from aicc.installer.playbook import roles_dir
    from aicc.models.catalog import load_catalog

    variables = package_variables(roles_dir())
    models = [m.name for m in load_catalog().models if m.tier == "embedded" and m.default]
    if json_out:
        output.emit_json(
            {"packages": variables, "host_prerequisites": list(HOST_PREREQUISITES), "models": models}
        )
        return
    rows = [(var, " ".join(pkgs)) for var, pkgs in sorted(variables.items())]
    rows.append(("(host prerequisites)", " ".join(HOST_PREREQUISITES)))
    output.console.print(
        output.table("Debian packages the roles install", ["role variable", "packages"], rows)
    )
    output.console.print(
        f"default models: {', '.join(models)}; wheels: aicc[engines,app] and its dependencies"
    )


@app.command("build")
def build_cmd(
    out: Annotated[Path, typer.Option("--out", help="The archive to write (a .tar).")],
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated catalog models (default: the embedded defaults)."),
    ] = None,
    with_deb: Annotated[
        list[Path] | None,
        typer.Option("--with-deb", help="A customer .deb to add to the bundle's repository (repeatable)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build the bundle (on a machine with access to the package registries): the apt repository of
    every role's packages and their closure, the wheelhouse, the models, llama-server, a signed manifest
    and a CycloneDX SBOM. Cached: a rebuild with nothing changed keeps the archive."""
    from aicc.installer.bundle.build import build

    result = build(
        out,
        models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        with_debs=with_deb or [],
        console=output.err_console if json_out else output.console,
        quiet=json_out,
    )
    if json_out:
        output.emit_json({"ok": True, **result.as_dict()})
        return
    m = result.manifest
    output.console.print(
        f"bundle {'kept (unchanged)' if result.unchanged else 'written'}: {out} "
        f"({m.total_size() / 2**30:.2f} GiB, {len(m.files)} files; {result.debs_total} .debs for "
        f"{result.debs_named} packages the roles name) signed by {result.manifest.signing_key}",
        highlight=False,
    )


def _bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("checking"),
        BarColumn(),
        DownloadColumn(),
        console=output.err_console,
        disable=disable,
        transient=True,
    )


@app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="The bundle archive.")],
    key: KeyOpt = None,
    site: Annotated[
        Path | None, typer.Option("--site", help="Site whose pinned bundle key to trust.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the signature (against the trusted key only) and every file's size and sha256, and that the
    bundle is for this aicc version. Unpacks nothing. Exit 0 when all is well, 1 naming every problem."""
    from aicc.installer.bundle.archive import check_archive
    from aicc.installer.bundle.build import aicc_version
    from aicc.installer.bundle.site_import import trusted_key
    from aicc.installer.errors import InputError

    if not bundle.is_file():
        raise InputError("bundle not found", where=str(bundle))
    trusted, origin = trusted_key(key, site)
    with _bar(json_out) as bar:
        task = bar.add_task("check", total=bundle.stat().st_size)
        verdict = check_archive(
            bundle, trusted, version=aicc_version(), progress=lambda n: bar.advance(task, n)
        )
    _report(verdict, bundle, origin, json_out, action="verified")


def _report(verdict: Verdict, bundle: Path, origin: str, json_out: bool, action: str) -> None:
    m = verdict.manifest
    data = {
        "ok": verdict.ok,
        "bundle": str(bundle),
        "trusted_key": origin,
        "signed_by": verdict.fingerprint,
        "aicc_version": m.aicc_version if m else None,
        "built_at": m.built_at if m else None,
        "files_checked": verdict.checked,
        "problems": verdict.problems,
    }
    if json_out:
        output.emit_json(data)
    elif verdict.ok:
        output.console.print(
            f"{bundle}: {action}: {verdict.checked} files, signed by {verdict.fingerprint} ({origin})",
            highlight=False,
        )
    else:
        output.err_console.print(
            f"{bundle}: {len(verdict.problems)} problem(s); nothing was changed:", highlight=False
        )
        for p in verdict.problems[:50]:
            output.err_console.print(f"  - {p}", highlight=False, markup=False)
    raise typer.Exit(EXIT_OK if verdict.ok else EXIT_FAILED)


@app.command("import")
def import_cmd(
    bundle: Annotated[Path, typer.Argument(help="The bundle archive.")],
    site: Annotated[Path, typer.Option("--site", help="The site folder (where aicc.yml is).")],
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify and unpack the bundle into SITE/bundle in one pass; the old bundle is replaced only when the
    new one passed every check. `aicc install` then serves its repository to the hosts over HTTPS."""
    from aicc.installer.bundle.site_import import import_bundle, trusted_key
    from aicc.installer.errors import InputError

    if not (site / "aicc.yml").is_file():
        raise InputError("not a site folder (no aicc.yml)", where=str(site), fix="aicc init --site DIR")
    _, origin = trusted_key(key, site)
    size = bundle.stat().st_size if bundle.is_file() else 0
    with _bar(json_out) as bar:
        task = bar.add_task("import", total=size)
        verdict = import_bundle(bundle, site.resolve(), key, lambda n: bar.advance(task, n))
    _report(verdict, bundle, origin, json_out, action=f"imported into {site / 'bundle'}")
