"""`aicc lab ...` verbs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from aicc.installer.errors import AiccError, InputError
from aicc.installer.lab import lifecycle
from aicc.installer.lab.net import EgressAttempts
from aicc.installer.lab.plan import DEFAULT_HOSTS, DEFAULT_NAME, DEFAULT_SUBNET, validate_name
from aicc.installer.lab.ssh import ssh_args
from aicc.installer.lab.state import all_labs, load_state
from aicc.installer.lab.steps import Steps
from aicc.installer.output import console, emit_json, err_console, table

app = typer.Typer(
    help="Local test hosts: Debian 12 containers on this machine (systemd-nspawn).", no_args_is_help=True
)

NameOpt = Annotated[
    str, typer.Option("--name", help="Lab name (1-8 lower-case letters/digits); several labs coexist.")
]


def _fail(exc: AiccError, as_json: bool = False) -> typer.Exit:
    if as_json:
        emit_json(exc.as_dict())
    else:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
    return typer.Exit(exc.exit_code)


@app.command()
def up(
    name: NameOpt = DEFAULT_NAME,
    subnet: Annotated[str, typer.Option(help="The lab's network, inside 10.231.0.0/16; one /24 per lab.")] = (
        DEFAULT_SUBNET
    ),
    hosts: Annotated[int, typer.Option("--hosts", help="Number of hosts (groups are spread over them).")] = (
        DEFAULT_HOSTS
    ),
    site: Annotated[
        Path, typer.Option(help="Site folder to write (settings, secrets, inventory, ssh key).")
    ] = Path("aicc-lab"),
    force: Annotated[
        bool, typer.Option(help="Recreate the lab if it is already up; remove what a run cut short left.")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Base image cache (default /var/cache/aicc/lab or $AICC_LAB_CACHE).")
    ] = None,
) -> None:
    """Boot Debian 12 hosts (systemd-nspawn, one network namespace each) and write a ready site for them.

    Defaults: --name aicc --subnet 10.231.0.0/24 --hosts 3 --site ./aicc-lab.
    """
    steps = Steps(err_console)
    try:
        state = lifecycle.up(name, subnet, hosts, site, force=force, cache=cache_dir, steps=steps)
    except AiccError as exc:
        raise _fail(exc) from None
    health = lifecycle.lab_health(state, check_ssh=False)
    console.print(_status_table(health, ssh_checked=False))
    console.print(
        f"lab [bold]{name}[/bold] ready in {steps.elapsed():.1f} s. Inventory: {health.inventory}\n"
        f"  next: aicc preflight -i {health.inventory}   |   aicc lab ssh lab1 --name {name}",
        highlight=False,
    )


@app.command()
def status(
    name: NameOpt = DEFAULT_NAME,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every lab on this machine.")] = False,
) -> None:
    """Hosts of a lab: address, running, SSH, what they tried to send out of the lab (refused by the
    lab's default-deny egress policy: count and destinations since boot), groups. Exit 1 when a host is
    down or its egress policy is gone."""
    try:
        names = all_labs() if all_ else [validate_name(name)]
    except AiccError as exc:
        raise _fail(exc, as_json) from None
    healths = []
    for n in names:
        state = load_state(n)
        if state is None:
            if all_:
                continue
            raise _fail(InputError(f"lab {n!r} is not up", fix=f"aicc lab up --name {n}"), as_json)
        healths.append(lifecycle.lab_health(state))
    if as_json:
        payload = [h.model_dump() | {"healthy": h.healthy} for h in healths]
        emit_json(payload if all_ else payload[0])
    else:
        if not healths:
            console.print("no lab is up on this machine")
        for h in healths:
            console.print(_status_table(h, ssh_checked=True))
    if not all(h.healthy for h in healths):
        raise typer.Exit(1)


def _status_table(h: lifecycle.LabHealth, ssh_checked: bool) -> object:
    rows = [
        (
            x.name,
            x.address,
            "ok" if x.running else "fail",
            ("ok" if x.ssh_ok else "fail") if ssh_checked else "-",
            _egress_cell(x.egress),
            ", ".join(x.groups),
        )
        for x in h.hosts
    ]
    title = f"lab {h.name}: {h.subnet}, bridge {h.bridge} {h.bridge_address}, site {h.site}"
    return table(title, ["host", "address", "running", "ssh", "tried to leave", "groups"], rows)


def _egress_cell(e: EgressAttempts) -> str:
    if not e.policy:
        return "NO POLICY (run `aicc lab up --force`)"
    if not e.packets:
        return "nothing"
    shown = ", ".join(e.tried[:3]) + (f" +{len(e.tried) - 3}" if len(e.tried) > 3 else "")
    return f"{e.packets} packets refused: {shown}"


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="lab1, lab2, ...")],
    name: NameOpt = DEFAULT_NAME,
) -> None:
    """SSH to a lab host as root: `aicc lab ssh lab2 -- systemctl is-system-running`."""
    try:
        validate_name(name)
        state = load_state(name)
        if state is None:
            raise InputError(f"lab {name!r} is not up", fix=f"aicc lab up --name {name}")
        h = state.plan.host(host)
    except AiccError as exc:
        raise _fail(exc) from None
    interactive = not ctx.args and sys.stdin.isatty()
    args = ssh_args(Path(state.site), h.address, batch=not interactive)
    if interactive:
        args.insert(1, "-t")
    sys.stdout.flush()
    os.execvp(args[0], [*args, *ctx.args])  # noqa: S606 - replaces this process with ssh, no shell


@app.command()
def down(
    name: NameOpt = DEFAULT_NAME,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also remove what a run cut short left without a state file (containers, links, folders).",
        ),
    ] = False,
) -> None:
    """Stop the lab's hosts; remove its namespaces, veths, bridge and overlays. Keeps the image cache
    and the site folder. Safe to run twice."""
    try:
        validate_name(name)
        state = load_state(name)
        if state is not None and not yes:
            if not sys.stdin.isatty():
                raise InputError(f"removing lab {name!r} needs confirmation", fix="pass --yes")
            typer.confirm(
                f"remove lab {name!r} ({len(state.plan.hosts)} hosts, {state.plan.subnet})?", abort=True
            )
        steps = Steps(err_console)
        removed = lifecycle.down(name, steps, force=force)
    except AiccError as exc:
        raise _fail(exc) from None
    console.print(f"lab {name!r} removed" if removed else f"lab {name!r} is not up; nothing to remove")


@app.command()
def prune(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Base image cache (default /var/cache/aicc/lab or $AICC_LAB_CACHE).")
    ] = None,
) -> None:
    """Remove cached base images of older recipes that no lab uses (the current one is kept)."""
    from aicc.installer.lab.cache import prune as prune_images
    from aicc.installer.lab.image import cache_root

    removed = prune_images(cache_root(cache_dir))
    for path in removed:
        console.print(f"removed {path}")
    console.print(f"{len(removed)} old image(s) removed")
