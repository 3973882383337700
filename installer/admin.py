"""`aicc admin create|url`: the appliance's first admin, made on the first [app] host over SSH.

There is no default admin password. The password is typed twice (hidden) or read from the first line
of a file only its owner can read, and reaches the host on the SSH session's stdin: never on a command
line, which other users of either machine could read in the process list.
"""

from __future__ import annotations

import getpass
import shlex
import stat
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from aicc.installer import output, remote
from aicc.installer.errors import InputError, RunFailed
from aicc.installer.inputfile import read_input_file
from aicc.installer.inventory import Host, load_inventory
from aicc.installer.settings import SiteSettings
from aicc.installer.site import Site

# Where the appliance role installs the services (roles/appliance: appliance_venv, appliance_config_dir).
APP_VENV = "/opt/aicc/app"
APP_CONFIG = "/etc/aicc/app.yml"
# The service's exit status for a refused request (weak password, existing user): nothing changed.
SERVICE_REFUSED = 2
REMOTE_TIMEOUT_S = 120

app = typer.Typer(
    help="The appliance's users: make the first admin, show where to log in.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SiteDirOpt = Annotated[
    Path, typer.Option("--site", help="The site folder (aicc.yml, inventory.ini, secrets.yml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]


def first_app_host(site: Site) -> Host:
    inventory = load_inventory(site.inventory_path)
    hosts = inventory.group("app")
    if not hosts:
        raise InputError(
            "the inventory has no [app] host", where=str(site.inventory_path), fix="add one under [app]"
        )
    return hosts[0]


def appliance_url(host: Host, settings: SiteSettings) -> str:
    address = f"[{host.address}]" if ":" in host.address else host.address
    port = "" if settings.app.https_port == 443 else f":{settings.app.https_port}"
    return f"https://{address}{port}/"


def password_from_file(path: Path) -> str:
    """The first line of a file that only its owner may read or change (like secrets.yml)."""
    text = read_input_file(path, "password file")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read password file: {exc.strerror}", where=str(path)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"password file is open to other users (mode {stat.S_IMODE(mode):04o})",
            where=str(path),
            fix=f"chmod 600 {path}",
        )
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise InputError("the password file's first line is empty", where=str(path))
    return lines[0]


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def password_from_terminal(username: str) -> str:
    """Asked twice, never echoed."""
    if not stdin_is_terminal():
        raise InputError(
            "no terminal to ask the password on",
            fix="pass --password-file FILE (the password on its first line, chmod 600 FILE)",
        )
    first = getpass.getpass(f"Password for {username}: ")
    if not first:
        raise InputError("empty password; nothing was changed")
    if getpass.getpass("Same password again: ") != first:
        raise InputError("the two passwords differ; nothing was changed", fix="run the command again")
    return first


def create_command(host: Host, username: str, display_name: str | None) -> str:
    """The remote command line: names only, the password comes on stdin (--password-stdin)."""
    argv = [f"{APP_VENV}/bin/python", "-m", "aicc.appliance.api", "admin", "create"]
    argv += ["--config", APP_CONFIG, "--username", username]
    if display_name:
        argv += ["--display-name", display_name]
    argv.append("--password-stdin")
    command = shlex.join(argv)
    return command if host.user == "root" else f"sudo -n {command}"


def create_admin(host: Host, username: str, display_name: str | None, password: str) -> str:
    """Run the service's `admin create` on the host; its message on success, else an AiccError."""
    result = remote.run(
        host, create_command(host, username, display_name), stdin=password + "\n", timeout=REMOTE_TIMEOUT_S
    )
    # The service never prints the password; this keeps it out of the terminal if that ever changed.
    message = remote.short_error(result).replace(password, "***")
    if result.unreachable:
        raise RunFailed(
            f"cannot reach {host.name} ({host.address}) over SSH: {message}",
            where=host.name,
            fix="check the host is up, then `aicc preflight -i INVENTORY`",
        )
    if result.returncode == SERVICE_REFUSED:
        raise InputError(message, where=host.name, fix="nothing was changed; correct it and run again")
    # 127: the shell found no such program; sudo says "command not found" (and exits 1).
    if result.returncode == 127 or f"{APP_VENV}/bin/python: command not found" in result.stderr:
        raise RunFailed(
            f"the appliance is not installed on {host.name} ({APP_VENV} missing)",
            where=host.name,
            fix="run `aicc install -i INVENTORY` first",
        )
    if not result.ok:
        raise RunFailed(
            f"admin create failed on {host.name}: {message}",
            where=host.name,
            fix="`aicc status -i INVENTORY` shows whether aicc-api and the database are up",
        )
    return result.stdout.strip().replace(password, "***")


@app.command()
def create(
    site: SiteDirOpt,
    username: Annotated[str, typer.Option("--username", help="Login name of the new admin.")] = "admin",
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="Name shown in the web pages and the audit log.")
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the password from this file's first line (mode 0600) instead of asking twice.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Make an appliance admin on the first [app] host (run `aicc install` first).

    The password is asked twice on the terminal (hidden), or read from --password-file, never given as
    an argument. The service refuses a weak password (it needs 12 characters of 3 kinds, or 16 of any)
    or an existing username: exit 2, nothing changed.

    Example: `aicc admin create --site ./site --username alice --display-name "Alice Wang"`
    """
    the_site = Site(site.resolve())
    host = first_app_host(the_site)
    settings = the_site.settings()
    password = password_from_file(password_file) if password_file else password_from_terminal(username)
    message = create_admin(host, username, display_name, password)
    url = appliance_url(host, settings)
    if json_out:
        output.emit_json(
            {"ok": True, "host": host.name, "username": username, "url": url, "message": message}
        )
        return
    done = escape(message or "admin created")
    output.console.print(f"[green]{done}[/green] on {host.name}", highlight=False)
    output.console.print(f"log in at {url}", markup=False, highlight=False)


@app.command()
def url(site: SiteDirOpt, json_out: JsonOpt = False) -> None:
    """Print the appliance's address: https on the first [app] host.

    Example: `aicc admin url --site ./site`
    """
    the_site = Site(site.resolve())
    host = first_app_host(the_site)
    address = appliance_url(host, the_site.settings())
    if json_out:
        output.emit_json({"ok": True, "host": host.name, "url": address})
        return
    output.console.print(address, markup=False, highlight=False, soft_wrap=True)
