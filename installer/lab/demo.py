"""`aicc demo`: the whole product on this one machine: lab hosts, preflight, install, (smoke call).

It says what it does step by step, ends with a real test call (`aicc smoke`) and where to look.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from aicc.installer import output
from aicc.installer.errors import EXIT_FAILED, AiccError, RunFailed
from aicc.installer.inventory import load_inventory
from aicc.installer.lab import lifecycle
from aicc.installer.lab.steps import Steps
from aicc.installer.site import Site

DEMO_NAME = "demo"
DEMO_SUBNET = "10.231.100.0/24"


def demo(
    site: Annotated[
        Path, typer.Option(help="Site folder the demo writes (settings, secrets, inventory).")
    ] = Path("aicc-demo"),
    hosts: Annotated[int, typer.Option(help="Number of lab hosts.")] = 3,
    name: Annotated[str, typer.Option(help="Lab name of the demo's hosts.")] = DEMO_NAME,
    subnet: Annotated[str, typer.Option(help="The demo lab's network (inside 10.231.0.0/16).")] = DEMO_SUBNET,
    force: Annotated[bool, typer.Option(help="Recreate the demo's hosts even if they are up.")] = False,
) -> None:
    """Run the whole contact center on this machine: boot local Debian 12 hosts (systemd-nspawn),
    check them, install every role, and show where to look. Needs root. Remove with
    `aicc lab down --name demo`."""
    steps = Steps(output.err_console)
    console = output.console
    try:
        console.rule("1/5 the offline bundle: packages, wheels, engines and models (built once, then cached)")
        from aicc.installer.bundle.build import CACHE, build

        bundle = build(CACHE / "aicc-bundle.tar", models=None, with_debs=[], console=console).archive

        console.rule("2/5 lab hosts, installing from the bundle")
        state = lifecycle.up(name, subnet, hosts, site, force=force, steps=steps)
        the_site = Site(Path(state.site))
        _use_bundle(the_site, bundle)
        inv = load_inventory(the_site.inventory_path)
        settings = the_site.settings()

        console.rule("3/5 preflight")
        from aicc.installer import preflight as pf

        checks = pf.evaluate(inv, settings, pf.gather(list(inv.hosts.values()), inv, settings))
        failed = [c for c in checks if c.status == "fail"]
        if failed:
            rows = [(c.host, c.check, c.status, c.message, c.fix) for c in failed]
            console.print(
                output.table("preflight", ["host", "check", "status", "message", "how to fix"], rows)
            )
            raise typer.Exit(EXIT_FAILED)
        counts = pf.summary(checks)
        console.print(f"preflight passed: {counts['ok']} ok, {counts['warn']} warnings")

        console.rule("4/5 install")
        from aicc.installer.cli import print_install_report
        from aicc.installer.playbook import run_playbook

        report = run_playbook(the_site, inv, console=console, show_progress=True)
        print_install_report(report)
        if not report.ok:
            console.print(
                f"the demo stopped at the install (see above). Its hosts stay up for a look: "
                f"`aicc lab ssh lab1 --name {name}`; remove them with `aicc lab down --name {name} --yes`."
            )
            raise typer.Exit(EXIT_FAILED)
    except AiccError as exc:
        output.err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None

    console.rule("5/5 test call")
    smoke_ok = _smoke(the_site)
    _where_to_look(the_site, _first_host_by_group(the_site), settings.monitoring.prometheus_port, name)
    console.print(
        f"total {steps.elapsed():.0f} s. Remove the demo's hosts with `aicc lab down --name {name} --yes`."
    )
    if not smoke_ok:
        raise typer.Exit(EXIT_FAILED)


def _use_bundle(site: Site, bundle: Path) -> None:
    """Import the bundle (checked in the same pass) and point the hosts at it: every package, wheel and
    model the demo installs comes from it, served by this machine over HTTPS for the install."""
    from aicc.installer.bundle.site_import import import_bundle
    from aicc.installer.lab.sitefiles import set_package_source

    verdict = import_bundle(bundle, site.root, None, lambda n: None)
    if not verdict.ok:
        raise RunFailed(f"the demo's bundle failed its check: {verdict.problems[0]}", where=str(bundle))
    output.console.print(f"bundle: {verdict.checked} files checked and imported into {site.root / 'bundle'}")
    set_package_source(site, "bundle", "")


def _smoke(site: Site) -> bool:
    """A real SIP call to the bot through Kamailio (`aicc smoke`), checking what it says back."""
    aicc = Path(sys.executable).parent / "aicc"
    proc = subprocess.run([str(aicc), "smoke", "-i", str(site.inventory_path)], check=False)
    return proc.returncode == 0


def _first_host_by_group(site: Site) -> dict[str, str]:
    inv = load_inventory(site.inventory_path)
    found: dict[str, str] = {}
    for host in inv.hosts.values():
        for g in host.groups:
            found.setdefault(g, host.address)
    return found


def _where_to_look(site: Site, inv_groups: dict[str, str], prom_port: int, lab: str) -> None:
    rows = [
        ("the appliance (API, OpenAPI at /api/openapi.json)", f"https://{inv_groups['app']}/api/health"),
        ("its first admin", f"aicc admin create --site {site.root}"),
        ("Prometheus", f"http://{inv_groups['monitoring']}:{prom_port}/targets"),
        ("services, versions, ports", f"aicc status -i {site.inventory_path}"),
        ("install logs", str(site.logs)),
        ("a shell on a host", f"aicc lab ssh lab1 --name {lab}"),
    ]
    output.console.print(output.table("where to look", ["what", "where"], rows))
