"""The site inventory: Ansible's INI format, read strictly so mistakes surface before any change.

We parse it ourselves (rather than through Ansible, which only warns) to report an unknown group, a
host in no group, an empty required group or a duplicate address with the file and line number.
Ansible reads the same file when it runs; a test checks both readings agree.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import shlex
from pathlib import Path

from pydantic import BaseModel, Field

from aicc.installer.addresses import address_problem
from aicc.installer.errors import InputError, RunFailed
from aicc.installer.inputfile import read_input_file
from aicc.installer.sizing import GROUPS

_SECTION = re.compile(r"^\[(?P<name>[A-Za-z0-9_.-]+)(?::(?P<kind>vars|children))?\]\s*$")


class Host(BaseModel):
    name: str
    address: str = Field(description="ansible_host, or the name itself")
    user: str = "root"
    port: int = 22
    groups: list[str] = Field(default_factory=list)
    vars: dict[str, str] = Field(default_factory=dict)

    @property
    def key_file(self) -> str | None:
        return self.vars.get("ansible_ssh_private_key_file")


class Inventory(BaseModel):
    path: Path
    hosts: dict[str, Host]
    all_vars: dict[str, str] = Field(default_factory=dict)

    def group(self, name: str) -> list[Host]:
        return [h for h in self.hosts.values() if name in h.groups]

    def monitoring_host(self, without: str) -> Host:
        """The first [monitoring] host; `without` says what the site lacks when there is none."""
        hosts = self.group("monitoring")
        if not hosts:
            raise RunFailed(
                f"this site has no [monitoring] host, so {without}",
                where=str(self.path),
                fix="add a host to [monitoring] in the inventory and run `aicc install`",
            )
        return hosts[0]

    def groups_of(self, host: str) -> list[str]:
        return self.hosts[host].groups

    def select(self, limit: str | None) -> list[Host]:
        """Hosts matching a comma-separated list of host or group names (all when None)."""
        if not limit:
            return list(self.hosts.values())
        wanted = [w.strip() for w in limit.split(",") if w.strip()]
        chosen: dict[str, Host] = {}
        for w in wanted:
            if w == "localhost":
                continue  # the installer host's own play (site PKI): not an inventory host
            matched = [h for h in self.hosts.values() if h.name == w or w in h.groups]
            if not matched:
                raise InputError(
                    f"--limit {w!r} matches no host or group",
                    where=str(self.path),
                    fix=(
                        f"hosts: {', '.join(self.hosts)}; groups: {', '.join(GROUPS)}; "
                        "localhost: the installer's own play"
                    ),
                )
            chosen.update((h.name, h) for h in matched)
        return list(chosen.values())


def load_inventory(path: Path) -> Inventory:
    text = read_input_file(
        path,
        "inventory",
        missing_fix="pass -i with the site's inventory.ini, or create a site with `aicc init --site DIR`",
    )
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    hosts: dict[str, Host] = {}
    host_line: dict[str, int] = {}
    group_vars: dict[str, dict[str, str]] = {}
    section: tuple[str, str | None] = ("ungrouped", None)
    seen_groups: set[str] = set()

    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            m = _SECTION.match(line)
            if not m:
                raise InputError(
                    f"malformed section header {line!r}", where=where, fix="use [group] or [group:vars]"
                )
            name, kind = m["name"], m["kind"]
            if name not in GROUPS and name != "all":
                raise InputError(f"unknown group [{name}]{_did_you_mean(name)}", where=where, fix=_GROUP_FIX)
            if kind == "children":
                raise InputError(
                    f"[{name}:children] is not supported",
                    where=where,
                    fix="list hosts in each group directly",
                )
            if name == "all" and kind != "vars":
                raise InputError(
                    "[all] cannot list hosts", where=where, fix="use [all:vars] for shared variables"
                )
            section = (name, kind)
            seen_groups.add(name)
            continue
        name, kind = section
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise InputError(f"expected key=value, found {line!r}", where=where)
            group_vars.setdefault(name, {})[key.strip()] = _unquote(value.strip())
            continue
        if name == "ungrouped":
            raise InputError(
                f"host line {line!r} is before any [group] section",
                where=where,
                fix=f"put it under one of: {', '.join(GROUPS)}",
            )
        try:
            parts = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"cannot parse host line: {exc}", where=where) from None
        hostname, *pairs = parts
        why = address_problem(hostname)
        if why:
            raise InputError(f"invalid host name: {why}", where=where, fix=_ADDRESS_FIX)
        hvars: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise InputError(f"expected key=value after the host name, found {pair!r}", where=where)
            hvars[key] = value
        host = hosts.get(hostname)
        if host is None:
            host = Host(name=hostname, address=hostname)
            hosts[hostname] = host
            host_line[hostname] = lineno
        elif host.vars and hvars and hvars != host.vars:
            raise InputError(
                f"host {hostname!r} is listed again with different variables "
                f"(first at line {host_line[hostname]})",
                where=where,
                fix="give the variables once; later lines may list the host name alone",
            )
        host.vars.update(hvars)
        if name not in host.groups:
            host.groups.append(name)

    all_vars = group_vars.get("all", {})
    for host in hosts.values():
        merged = {**all_vars}
        for g in host.groups:
            merged.update(group_vars.get(g, {}))
        merged.update(host.vars)
        host.vars = merged
        host.address = merged.get("ansible_host", host.name)
        host.user = merged.get("ansible_user", "root")
        try:
            host.port = int(merged.get("ansible_port", "22"))
        except ValueError:
            raise InputError(
                f"host {host.name}: ansible_port must be a number, found {merged['ansible_port']!r}",
                where=f"{path}:{host_line[host.name]}",
            ) from None

    inv = Inventory(path=path, hosts=hosts, all_vars=all_vars)
    _validate(inv, host_line, path)
    return inv


_GROUP_FIX = "groups are: " + ", ".join(GROUPS)
_ADDRESS_FIX = (
    "an IPv4 address (10.0.0.5), an IPv6 address (fd00::5) or a host name "
    "(letters, digits and '-' in labels separated by '.', such as aicc-01.example.cn)"
)
# RFC 5737 documentation ranges: `aicc init` writes them as placeholders, they are never real hosts.
_PLACEHOLDER_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(GROUPS), n=1)
    return f"; did you mean [{close[0]}]?" if close else ""


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _validate(inv: Inventory, host_line: dict[str, int], path: Path) -> None:
    if not inv.hosts:
        raise InputError("the inventory lists no hosts", where=str(path), fix=_GROUP_FIX)
    empty = [g for g, spec in GROUPS.items() if spec.required and not inv.group(g)]
    if empty:
        raise InputError(
            f"required group(s) with no host: {', '.join(empty)}",
            where=str(path),
            fix="add a host under each; one host may be listed in several groups",
        )
    by_address: dict[tuple[str, int], str] = {}
    for host in inv.hosts.values():
        where = f"{path}:{host_line[host.name]}"
        addr = host.address
        why = address_problem(addr)
        if why:
            raise InputError(f"host {host.name}: invalid address: {why}", where=where, fix=_ADDRESS_FIX)
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(addr)
        except ValueError:
            ip = None  # a host name
        if ip is not None and any(ip in net for net in _PLACEHOLDER_NETS):
            raise InputError(
                f"host {host.name} still has the placeholder address {addr}",
                where=where,
                fix="replace ansible_host with the address of your own host",
            )
        other = by_address.get((addr, host.port))
        if other:
            raise InputError(
                f"hosts {other} and {host.name} have the same address {addr}",
                where=where,
                fix="one host may hold several groups: list the same host name under each group",
            )
        by_address[(addr, host.port)] = host.name
