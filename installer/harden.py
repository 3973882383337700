"""`aicc harden controls|apply|report|verify`: host hardening and the MLPS 2.0 level-3 compliance report.

The controls live in aicc.hardening (hardening/controls/*.yml); `apply` runs the hardening role on the
hosts, `report` collects evidence from every host in parallel, folds it per GB/T 28448 test unit, and
writes a signed report folder; `verify` checks such a folder's signature and every file in it.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from aicc.installer import output
from aicc.installer.errors import EXIT_FAILED, EXIT_OK, InputError

if TYPE_CHECKING:
    from aicc.hardening.catalog import Catalog, CatalogError
    from aicc.hardening.report import Report

app = typer.Typer(
    help=(
        "Host hardening and the compliance report (MLPS 2.0 level 3, GB/T 22239-2019 / GB/T 28448-2019).\n\n"
        "Flow: `aicc harden report -i INV` (what fails today) -> `aicc harden apply -i INV` -> "
        "`aicc harden report -i INV --format html,pdf,json` -> hand the folder over; the auditor runs "
        "`aicc harden verify DIR` (or `gpg --verify`)."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

InventoryOpt = Annotated[
    Path,
    typer.Option("--inventory", "-i", help="The site's inventory.ini; aicc.yml is read from its folder."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
SiteOpt = Annotated[
    Path | None, typer.Option("--site", help="Site folder, when it is not the inventory's folder.")
]
LangOpt = Annotated[str, typer.Option("--lang", help="zh or en: the language of titles and labels.")]
FORMATS = ("html", "pdf", "json")


def _input_error(exc: CatalogError) -> InputError:
    where = f"{exc.path}:{exc.line}" if exc.line else str(exc.path)
    return InputError(exc.message, where=where, fix=exc.fix)


def _catalog() -> Catalog:
    from aicc.hardening.catalog import CatalogError, default_catalog

    try:
        return default_catalog()
    except CatalogError as exc:
        raise _input_error(exc) from None


def _lang(lang: str) -> str:
    if lang not in ("zh", "en"):
        raise InputError(f"--lang must be zh or en, found {lang!r}")
    return lang


@app.command()
def controls(json_out: JsonOpt = False, lang: LangOpt = "zh") -> None:
    """List the controls: id, title, the GB/T 28448 test units each serves (full or partial), the hosts
    it applies to, and the `aicc harden apply --tags` tag that sets it (none: checked, not changed)."""
    catalog = _catalog()
    lang = _lang(lang)
    if json_out:
        output.emit_json(
            {
                "ok": True,
                "catalog_sha256": catalog.digest,
                "controls": [c.model_dump(mode="json") for c in catalog.controls],
                "clauses": [c.model_dump(mode="json") for c in catalog.clauses],
            }
        )
        return
    rows = [
        (
            c.id + (" *" if c.high_risk else ""),
            getattr(c.title, lang),
            ", ".join(r.unit + ("" if r.coverage == "full" else " (partial)") for r in c.clauses),
            ", ".join(c.hosts),
            c.apply.tag if c.apply else "-",
        )
        for c in catalog.controls
    ]
    output.console.print(output.table("controls", ["id", "title", "test units", "hosts", "tag"], rows))
    output.console.print(
        f"{len(rows)} controls; * = a failure is a high-risk finding; catalog {catalog.digest[:12]}"
    )


@app.command()
def apply(
    inventory: InventoryOpt,
    limit: Annotated[str | None, typer.Option(help="Only these hosts or groups (comma-separated).")] = None,
    tags: Annotated[
        str | None,
        typer.Option(
            help="Only these areas, e.g. hardening_ssh,hardening_firewall (see `aicc harden controls`)."
        ),
    ] = None,
    json_out: JsonOpt = False,
    site: SiteOpt = None,
) -> None:
    """Harden the hosts: SSH, password quality and lockout, account ageing and idle timeout, three-admin
    separation with sudo logging, auditd, kernel settings, nftables default-deny in and out, file
    permissions. What a host gets follows its groups (media hosts keep what RTP needs).

    The firewall always admits SSH from this machine and from hardening.admin_sources. Running it again
    changes nothing (changed=0). Then `aicc harden report` shows the result.
    """
    from aicc.installer.cli import print_install_report
    from aicc.installer.playbook import playbooks_dir, run_playbook
    from aicc.installer.site import site_for_inventory

    catalog = _catalog()
    if tags:
        known = {c.apply.tag for c in catalog.controls if c.apply} | {"hardening"}
        unknown = [t for t in tags.split(",") if t.strip() not in known]
        if unknown:
            raise InputError(f"unknown tag {unknown[0]!r}", fix="tags are: " + ", ".join(sorted(known)))
    the_site, inv = site_for_inventory(inventory, site)
    report = run_playbook(
        the_site,
        inv,
        playbook=playbooks_dir() / "harden.yml",
        limit=limit,
        tags=tags,
        console=output.console,
        show_progress=not json_out,
        state_name="harden.json",
    )
    if json_out:
        output.emit_json(report.as_dict())
    else:
        print_install_report(report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


@app.command()
def report(
    inventory: InventoryOpt,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: the site's reports/harden-<UTC time>)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="Comma-separated: html, pdf, json (report.json is always written)."),
    ] = "html,json",
    lang: LangOpt = "zh",
    limit: Annotated[str | None, typer.Option(help="Only these hosts or groups (comma-separated).")] = None,
    waivers: Annotated[
        Path | None, typer.Option("--waivers", help="Waiver file (default: hardening.waivers in aicc.yml).")
    ] = None,
    json_out: JsonOpt = False,
    site: SiteOpt = None,
) -> None:
    """Collect evidence from every host (in parallel, read-only), judge each control, fold the results per
    GB/T 28448 test unit, per layer and per host, and write a signed report folder:

    report.json, report.html, report.pdf (A4, Chinese fonts embedded, page numbers), evidence/HOST/CONTROL.txt
    (command and output), inventory/ (packages and wheels), times.json, MANIFEST.sha256 with its GnuPG
    signature and the public key. The content hash (report.json, evidence, inventory) is the same when
    nothing changed on the hosts. Exit 1 when a control fails on a host (waived ones do not count).
    """
    from aicc.hardening.catalog import CatalogError
    from aicc.hardening.evidence import collect
    from aicc.hardening.render import content_sha256, render_html, render_pdf, write_data
    from aicc.hardening.report import build_report
    from aicc.hardening.signing import sign_folder
    from aicc.hardening.waivers import load_waivers
    from aicc.installer.playbook import scrubber
    from aicc.installer.site import site_for_inventory

    catalog = _catalog()
    lang = _lang(lang)
    formats = {f.strip() for f in fmt.split(",") if f.strip()}
    if not formats or formats - set(FORMATS):
        raise InputError(f"--format takes html, pdf, json; found {fmt!r}")
    the_site, inv = site_for_inventory(inventory, site)
    settings = the_site.settings()
    waiver_path = waivers or the_site.root / settings.hardening.waivers
    try:
        waiver_list = load_waivers(waiver_path)
    except CatalogError as exc:
        raise _input_error(exc) from None
    hosts = inv.select(limit)
    scrub = scrubber(the_site.secrets())
    if json_out:
        collected = collect(hosts, catalog, settings, scrub)
    else:
        with output.console.status(f"collecting evidence from {len(hosts)} host(s) ..."):
            collected = collect(hosts, catalog, settings, scrub)
    today = datetime.now(UTC).date()
    rep = build_report(
        site=settings.site_name,
        version=version("aicc"),
        catalog=catalog,
        hosts={h.name: h.groups for h in hosts},
        collected=collected,
        waivers=waiver_list,
        today=today,
    )
    folder = out or the_site.root / "reports" / ("harden-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    write_data(rep, collected, folder)
    digest = content_sha256(folder)
    collected_at = collected.started_at.replace("T", " ").replace("+00:00", "")
    if formats & {"html", "pdf"}:
        (folder / "report.html").write_text(render_html(rep, catalog, lang, collected_at), encoding="utf-8")
    if "pdf" in formats:
        footer = html.escape(f"aicc {rep.aicc_version} · {rep.site} · content sha256 {digest[:16]}")
        render_pdf(folder / "report.html", folder / "report.pdf", footer)
    if "html" not in formats:
        (folder / "report.html").unlink(missing_ok=True)
    fingerprint = sign_folder(folder, _key_home(the_site.root), settings.site_name)
    failed = rep.totals["fail"] + rep.totals["error"]
    summary = {
        "ok": failed == 0 and not rep.unreachable,
        "folder": str(folder),
        "content_sha256": digest,
        "signing_key": fingerprint,
        "totals": rep.totals,
        "clause_totals": rep.clause_totals,
        "high_risk": rep.high_risk,
        "unreachable": rep.unreachable,
        "waivers": [w.model_dump() for w in rep.waivers],
        "seconds": round(collected.seconds, 1),
    }
    if json_out:
        output.emit_json(summary)
    else:
        _print_summary(rep, summary)
    raise typer.Exit(EXIT_OK if summary["ok"] else EXIT_FAILED)


def _key_home(site_root: Path) -> Path:
    return site_root / "keys" / "report-gnupg"


def _print_summary(rep: Report, summary: dict[str, object]) -> None:
    rows = [
        (h, *(str(c[s]) for s in ("pass", "fail", "error", "waived", "na"))) for h, c in rep.by_host.items()
    ]
    output.console.print(
        output.table("controls per host", ["host", "pass", "fail", "error", "waived", "n/a"], rows)
    )
    t = rep.clause_totals
    output.console.print(
        f"test units: {t['pass']} 符合 pass, {t['partial']} 部分符合 partial, {t['fail']} 不符合 fail, "
        f"{t['na']} n/a, {t['manual']} manual"
    )
    for key in rep.high_risk:
        output.console.print(f"[bold red]high risk[/bold red] {escape(key)}")
    for w in rep.waivers:
        if w.state in ("expired", "unmatched"):
            output.console.print(
                f"[yellow]waiver {w.state}[/yellow]: {escape(w.control)} on {escape(w.hosts)}"
            )
    for host, why in rep.unreachable.items():
        output.console.print(f"[bold red]not reached[/bold red] {host}: {escape(why)}")
    output.console.print(
        f"report: {summary['folder']}  (content sha256 {str(summary['content_sha256'])[:16]}…, "
        f"signed by {summary['signing_key']})"
    )


@app.command()
def verify(
    folder: Annotated[Path, typer.Argument(help="A report folder written by `aicc harden report`.")],
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory", "-i", help="The site's inventory: also require the site's own signing key."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a report folder: the GnuPG signature of MANIFEST.sha256, then every file against it (changed,
    missing, or not listed). With -i, the signature must also come from this site's key; without it,
    compare the fingerprint printed here with the one the site published.

    Exit 0 when everything verifies, 1 when anything does not.
    """
    from aicc.hardening.signing import fingerprint, verify_folder

    if not folder.is_dir():
        raise InputError("not a folder", where=str(folder))
    expected = None
    if inventory is not None:
        expected = fingerprint(_key_home(inventory.resolve().parent)) or None
        if expected is None:
            raise InputError("this site has no report signing key yet", where=str(inventory.resolve().parent))
    result = verify_folder(folder, expected)
    if json_out:
        output.emit_json(
            {
                "ok": result.ok,
                "signature_ok": result.signature_ok,
                "fingerprint": result.fingerprint,
                "site_key": result.trusted,
                "problems": result.problems,
            }
        )
    else:
        for p in result.problems:
            output.console.print(f"[bold red]FAIL[/bold red] {escape(p)}")
        if result.ok:
            who = "the site's key" if result.trusted else "the key in the folder (compare the fingerprint)"
            output.console.print(
                f"[green]verified[/green]: signature by {who} {result.fingerprint}; every file matches"
            )
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)
