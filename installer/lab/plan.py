"""The address and name plan of one lab: pure functions, no side effects.

Several labs coexist on one machine (tests, the demo, each engineer's own), so every kernel object
name derives from the lab name. Linux interface names are at most 15 characters: with a lab name of
at most 8 characters, `acb-<name>` (bridge) and `acv-<name>-<n>` (host side of a veth) fit.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel

from aicc.installer.errors import InputError

DEFAULT_NAME = "aicc"
DEFAULT_SUBNET = "10.231.0.0/24"
DEFAULT_HOSTS = 3
MAX_HOSTS = 32
# Labs only ever use this range: the rule is that lab traffic stays on addresses we create.
LAB_RANGE = ipaddress.IPv4Network("10.231.0.0/16")
FIRST_HOST_OFFSET = 11
IFNAMSIZ = 15
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class HostPlan(BaseModel):
    name: str  # inventory and host name: lab1, lab2, ...
    index: int  # 1-based
    address: str
    netns: str
    veth: str  # host side; the container side is eth0 inside the netns
    machine: str  # systemd-nspawn --machine, unique over all labs


class LabPlan(BaseModel):
    name: str
    subnet: str
    prefixlen: int
    bridge: str
    bridge_address: str
    hosts: list[HostPlan]

    def host(self, name: str) -> HostPlan:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InputError(
            f"lab {self.name!r} has no host {name!r}",
            fix=f"hosts are: {', '.join(h.name for h in self.hosts)}",
        )


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"invalid lab name {name!r}",
            where="--name",
            fix="1-8 characters, lower-case letters and digits, starting with a letter (e.g. aicc, dev2)",
        )
    return name


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise InputError(
            f"invalid subnet {subnet!r}: {exc}", where="--subnet", fix="use a network such as 10.231.5.0/24"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(LAB_RANGE):
        raise InputError(
            f"subnet {subnet} is outside {LAB_RANGE}",
            where="--subnet",
            fix="lab networks live in 10.231.0.0/16, e.g. 10.231.7.0/24 (one /24 per lab)",
        )
    return net


def make_plan(name: str, subnet: str, hosts: int) -> LabPlan:
    validate_name(name)
    net = parse_subnet(subnet)
    if not 1 <= hosts <= MAX_HOSTS:
        raise InputError(f"--hosts must be between 1 and {MAX_HOSTS}, got {hosts}", where="--hosts")
    last_offset = FIRST_HOST_OFFSET + hosts - 1
    # The last address is the broadcast address; it cannot be a host.
    if last_offset >= net.num_addresses - 1:
        raise InputError(
            f"subnet {subnet} is too small for {hosts} hosts (they start at .{FIRST_HOST_OFFSET})",
            where="--subnet",
            fix="use a /24",
        )
    base = net.network_address
    plan_hosts = [
        HostPlan(
            name=f"lab{i}",
            index=i,
            address=str(base + FIRST_HOST_OFFSET + i - 1),
            netns=f"aicc-{name}-lab{i}",
            veth=f"acv-{name}-{i}",
            machine=f"{name}-lab{i}",
        )
        for i in range(1, hosts + 1)
    ]
    plan = LabPlan(
        name=name,
        subnet=str(net),
        prefixlen=net.prefixlen,
        bridge=f"acb-{name}",
        bridge_address=str(base + 1),
        hosts=plan_hosts,
    )
    for ifname in [plan.bridge, *(h.veth for h in plan.hosts)]:
        assert len(ifname) <= IFNAMSIZ, ifname  # guaranteed by the name rule and MAX_HOSTS
    return plan
