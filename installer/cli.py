"""The `aicc` command line.

Exit codes: 0 ok; 1 a check or a run failed; 2 usage or input error (nothing was changed).
Every reporting verb takes --json: one JSON document on stdout, nothing else there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from aicc.installer import output
from aicc.installer.admin import app as admin_app
from aicc.installer.boteval_cli import app as bot_app
from aicc.installer.bundle.cli import app as bundle_app
from aicc.installer.errors import EXIT_FAILED, EXIT_OK, AiccError, InputError
from aicc.installer.harden import app as harden_app
from aicc.installer.ivr import app as ivr_app
from aicc.installer.lab.cli import app as lab_app
from aicc.installer.lab.demo import demo
from aicc.installer.smoke import smoke
from aicc.models.cli import app as models_app

if TYPE_CHECKING:
    from aicc.installer.alerts import FiringAlert

app = typer.Typer(
    name="aicc",
    help=(
        "Provision an on-premise AI contact center onto your own Debian 12 hosts.\n\n"
        "Typical flow: `aicc init --site ./site` -> edit site/inventory.ini -> "
        "`aicc preflight -i site/inventory.ini` -> `aicc install -i site/inventory.ini` -> "
        "`aicc status -i site/inventory.ini`.\n\n"
        "No hosts at hand? `aicc demo` builds local test hosts and runs the whole thing on this machine.\n\n"
        "Exit codes: 0 ok, 1 a check or run failed, 2 usage or input error."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(lab_app, name="lab")
app.add_typer(ivr_app, name="ivr")
app.add_typer(admin_app, name="admin")
app.add_typer(models_app, name="models")
app.add_typer(harden_app, name="harden")
app.add_typer(bundle_app, name="bundle")
app.add_typer(bot_app, name="bot")
app.command("demo")(demo)
app.command()(smoke)

InventoryOpt = Annotated[
    Path,
    typer.Option(
        "--inventory",
        "-i",
        help="The site's inventory.ini; aicc.yml and secrets.yml are read from its folder.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
SiteOpt = Annotated[
    Path | None, typer.Option("--site", help="Site folder, when it is not the inventory's folder.")
]


@app.command()
def init(
    site: Annotated[Path, typer.Option("--site", help="Folder to create the site in.")] = Path("site"),
    profile: Annotated[
        str, typer.Option(help="single: one host holds every group; ha: two or more hosts per group.")
    ] = "single",
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing site (new secrets too).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a site folder: aicc.yml (commented settings), inventory.ini, secrets.yml (0600).

    Every password and key in secrets.yml is generated here; there are no default passwords.
    Edit inventory.ini with your hosts' addresses, then run `aicc preflight`.
    """
    from aicc.installer.site import init_site

    if profile not in ("single", "ha"):
        raise InputError(
            f"--profile must be single or ha, found {profile!r}", fix="lab sites are made by `aicc lab up`"
        )
    created = init_site(site, profile=profile, force=force)
    files = [created.settings_path, created.inventory_path, created.secrets_path]
    if json_out:
        output.emit_json({"site": str(created.root), "files": [str(f) for f in files]})
        return
    output.console.print(f"[green]site created[/green] in {created.root}")
    for f in files:
        output.console.print(f"  {f.name:<14} {f}")
    output.console.print(
        f"next: edit {created.inventory_path.name}, then `aicc preflight -i {created.inventory_path}`"
    )


@app.command()
def preflight(inventory: InventoryOpt, json_out: JsonOpt = False, site: SiteOpt = None) -> None:
    """Check every host before anything is changed, and list ALL problems in one table.

    Checks: SSH and sudo, Debian 12, CPU/RAM/disk for the host's groups (see the README's table),
    required ports free, clock in sync, hosts reach each other and the package source, for
    [llm] hosts which engine they will get (vLLM on a GPU, else llama.cpp on CPU) and why, and for
    each messaging channel aicc.yml turns on its secrets in secrets.yml and its API's egress.
    Read-only on the hosts. Exit 1 if any check fails.
    """
    from aicc.installer import preflight as pf
    from aicc.installer.site import site_for_inventory

    the_site, inv = site_for_inventory(inventory, site)
    settings = the_site.settings()
    hosts = list(inv.hosts.values())
    if json_out:
        gathered = pf.gather(hosts, inv, settings)
    else:
        with output.console.status(f"checking {len(hosts)} host(s) ..."):
            gathered = pf.gather(hosts, inv, settings)
    checks = pf.site_checks(settings, the_site.secrets_path) + pf.evaluate(inv, settings, gathered)
    failed = any(c.status == "fail" for c in checks)
    if json_out:
        output.emit_json(pf.as_json(checks))
    else:
        rows = [(c.host, c.check, c.status, c.message, c.fix) for c in checks]
        output.console.print(
            output.table("preflight", ["host", "check", "status", "message", "how to fix"], rows)
        )
        counts = pf.summary(checks)
        verdict = "[bold red]FAILED[/bold red]" if failed else "[green]passed[/green]"
        output.console.print(
            f"preflight {verdict}: {counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed"
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@app.command()
def install(
    inventory: InventoryOpt,
    limit: Annotated[str | None, typer.Option(help="Only these hosts or groups (comma-separated).")] = None,
    tags: Annotated[
        str | None, typer.Option(help="Only tasks with these Ansible tags (comma-separated).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Restart from the play that failed last time.")
    ] = False,
    json_out: JsonOpt = False,
    site: SiteOpt = None,
) -> None:
    """Install or converge the site: run the site playbook on every host of the inventory.

    Shows a progress row per host (task n of N, current role and task), writes the full log to the
    site's logs/ folder, and ends with ok/changed/failed/unreachable per host. On failure it names
    the host, task and message; `--resume` then continues from the failed play. Running it again on
    a converged site changes nothing (changed=0).
    """
    from aicc.installer.playbook import run_playbook
    from aicc.installer.site import site_for_inventory

    the_site, inv = site_for_inventory(inventory, site)
    _refresh_own_wheel(the_site, quiet=json_out)
    report = run_playbook(
        the_site,
        inv,
        limit=limit,
        tags=tags,
        resume=resume,
        console=output.console,
        show_progress=not json_out,
    )
    if json_out:
        output.emit_json(report.as_dict())
    else:
        print_install_report(report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def _refresh_own_wheel(site: object, *, quiet: bool) -> None:
    """Run from a checkout, hosts must get this code: its version number alone does not change."""
    from aicc.installer.playbook import wheelhouse_dir
    from aicc.installer.site import Site
    from aicc.models.wheelhouse import refresh_own_wheel

    assert isinstance(site, Site)
    wheels = wheelhouse_dir(site)
    if wheels.is_dir() and refresh_own_wheel(wheels) and not quiet:
        output.console.print(f"wheelhouse: aicc's own wheel in {wheels} rebuilt from this checkout")


def print_install_report(report: object) -> None:
    from aicc.installer.playbook import RunReport

    assert isinstance(report, RunReport)
    rows = [
        (h, s.ok, s.changed, "fail" if s.failed else 0, "fail" if s.unreachable else 0, s.skipped)
        for h, s in sorted(report.hosts.items())
    ]
    output.console.print(
        output.table("install", ["host", "ok", "changed", "failed", "unreachable", "skipped"], rows)
    )
    for f in report.failures:
        output.err_console.print(
            f"[bold red]failed[/bold red] on [bold]{f.host}[/bold] in play {f.play!r}, "
            f"task {f.task!r}:\n  {f.message}"
        )
    verdict = "[green]done[/green]" if report.ok else "[bold red]FAILED[/bold red]"
    output.console.print(f"install {verdict} in {report.seconds:.0f} s; log: {report.log}")
    if report.resume_from:
        output.console.print(
            f"fix the problem, then `aicc install --resume` continues from play {report.resume_from!r}"
        )


@app.command()
def status(inventory: InventoryOpt, json_out: JsonOpt = False, site: SiteOpt = None) -> None:
    """Per host and service: active or not, enabled, installed version, listening ports; then the
    alerts firing now (from the site's Prometheus; see `aicc alerts`).

    Exit 1 when any service is not active or a host cannot be reached (alerts are shown, and
    `aicc alerts` exits 1 on a critical one).
    """
    from aicc.installer import alerts as al
    from aicc.installer import status as st
    from aicc.installer.site import site_for_inventory

    site_obj, inv = site_for_inventory(inventory, site)
    rows = st.collect(inv, list(inv.hosts.values()))
    firing: list[al.FiringAlert] | None = None
    alerts_error = ""
    if inv.group("monitoring"):
        try:
            firing = [
                a
                for a in al.collect(inv, site_obj.settings().monitoring.prometheus_port)
                if a.state == "firing"
            ]
        except AiccError as exc:
            alerts_error = str(exc)
    ok = st.healthy(rows)
    if json_out:
        output.emit_json(
            {
                **st.as_json(rows),
                "ok": ok,
                "alerts": None if firing is None else al.as_json(firing),
                "alerts_error": alerts_error or None,
            }
        )
    else:
        table_rows = [
            (
                r.host,
                r.service,
                "ok" if r.active == "active" else "fail",
                r.active,
                r.enabled,
                r.version,
                " ".join(r.ports),
            )
            for r in rows
        ]
        output.console.print(
            output.table(
                "status", ["host", "service", "", "active", "enabled", "version", "listening"], table_rows
            )
        )
        if alerts_error:
            output.console.print(f"[yellow]alerts: not known[/yellow] ({escape(alerts_error)})")
        elif firing is not None:
            _print_alerts(firing, "alerts firing")
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


def _print_alerts(alerts: list[FiringAlert], title: str) -> None:
    if not alerts:
        output.console.print(f"{title}: none")
        return
    output.console.print(
        output.table(
            title,
            ["alert", "severity", "state", "host", "since (UTC)", "summary"],
            [(a.name, a.severity, a.state, a.host, a.since, a.summary) for a in alerts],
        )
    )
    output.console.print("runbooks:", highlight=False)
    for a in alerts:
        output.console.print(f"  {a.name}: {escape(a.runbook_url)}", highlight=False, soft_wrap=True)


@app.command()
def alerts(
    inventory: InventoryOpt,
    json_out: JsonOpt = False,
    site: SiteOpt = None,
    pending: Annotated[
        bool,
        typer.Option("--pending", help="Also list alerts whose condition holds but not yet for long enough."),
    ] = False,
) -> None:
    """The alerts the site's Prometheus has firing now, worst first, with their runbook links.

    The rules come with aicc (monitoring/rules.py and the SLOs in monitoring/slos/); each alert's
    runbook section says what to check and what to do. Exit 1 when a critical alert fires.
    """
    from aicc.installer import alerts as al
    from aicc.installer.site import site_for_inventory

    site_obj, inv = site_for_inventory(inventory, site)
    found = [
        a
        for a in al.collect(inv, site_obj.settings().monitoring.prometheus_port)
        if pending or a.state == "firing"
    ]
    if json_out:
        output.emit_json({"ok": True, "alerts": al.as_json(found)})
    else:
        _print_alerts(found, "alerts firing" + (" or pending" if pending else ""))
    raise typer.Exit(
        EXIT_FAILED if any(a.severity == "critical" and a.state == "firing" for a in found) else EXIT_OK
    )


@app.command()
def logs(
    inventory: InventoryOpt,
    json_out: JsonOpt = False,
    site: SiteOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Only this inventory host's entries.")] = None,
    unit: Annotated[
        str | None, typer.Option("--unit", "-u", help="Only this systemd unit (kamailio, aicc-api ...).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help='From this time (journalctl forms: "2026-12-04 10:00", "-1h", "today").'
        ),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Up to this time (same forms).")] = None,
    grep: Annotated[
        str | None, typer.Option("--grep", "-g", help="Only messages matching this regular expression.")
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="The newest N entries (1 to 10000).")] = 100,
) -> None:
    """Every host's journal, collected on the [monitoring] host: the newest entries, oldest first,
    with host, time (UTC), unit and message.

    Hosts forward their journal with systemd-journal-upload (HTTPS); the monitoring host keeps it
    for monitoring.log_retention_days (default 180). With --json: the entries as a list.
    """
    from aicc.installer import logs as lg
    from aicc.installer.site import site_for_inventory

    _, inv = site_for_inventory(inventory, site)
    query = lg.LogQuery(host=host, unit=unit, since=since, until=until, grep=grep, lines=lines)
    entries = lg.collect(inv, query)
    if json_out:
        output.emit_json({"ok": True, "entries": lg.as_json(entries)})
        return
    if not entries:
        output.console.print("no entries match")
        return
    table = output.table(
        "logs",
        ["host", "time (UTC)", "unit", "message"],
        [(e.host, e.time[:23].replace("T", " "), e.unit or e.identifier, e.message) for e in entries],
    )
    output.console.print(table)


egress_app = typer.Typer(help="The hosts' outbound traffic: what the firewall allows and what it stopped.")
app.add_typer(egress_app, name="egress")


@egress_app.command("report")
def egress_report(
    inventory: InventoryOpt,
    json_out: JsonOpt = False,
    site: SiteOpt = None,
    limit: Annotated[str | None, typer.Option("--limit", help="Only these hosts or groups.")] = None,
) -> None:
    """Per host, read live from nftables: the egress allowlist in force (table inet aicc_hardening, set
    by `aicc harden apply`), the packets each allowed rule passed, and the packets dropped since boot
    with the last destinations that tried (where the kernel logs them).

    Exit 1 when a host cannot be reached or has no default-deny egress policy (not hardened yet).
    """
    from aicc.installer import egress
    from aicc.installer.site import site_for_inventory

    _, inv = site_for_inventory(inventory, site)
    rows = egress.collect(inv.select(limit))
    bad = any(not r.reachable or not r.policy for r in rows)
    if json_out:
        output.emit_json({"ok": not bad, "hosts": egress.as_json(rows)})
        raise typer.Exit(EXIT_FAILED if bad else EXIT_OK)
    summary = [
        (
            r.host,
            "unreachable: " + r.error
            if not r.reachable
            else ("default deny" if r.policy else "no egress policy"),
            r.dropped_packets,
            "; ".join(
                f"{d.get('DST', '?')}:{d.get('DPT', '')}/{d.get('PROTO', '')}" for d in r.recent_drops[-5:]
            ),
        )
        for r in rows
    ]
    output.console.print(
        output.table("egress", ["host", "policy", "dropped (packets)", "last tried"], summary)
    )
    for r in rows:
        if r.allowed:
            allowed = [(a.what, a.rule, a.packets) for a in r.allowed]
            output.console.print(output.table(f"{r.host}: allowed out", ["what", "rule", "packets"], allowed))
    raise typer.Exit(EXIT_FAILED if bad else EXIT_OK)


def main() -> None:
    try:
        app()
    except AiccError as exc:
        if "--json" in sys.argv:
            output.emit_json({"ok": False, **exc.as_dict()})
        else:
            output.err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        output.err_console.print("interrupted")
        sys.exit(130)
