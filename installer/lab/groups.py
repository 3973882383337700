"""Which inventory groups each lab host holds, and the lab's inventory.ini text."""

from __future__ import annotations

from pathlib import Path

from aicc.installer.lab.plan import LabPlan
from aicc.installer.sizing import GROUPS

# Layouts for 1..8 hosts: the call path apart from the data, then heavier groups get their own host.
_LAYOUTS: dict[int, list[list[str]]] = {
    1: [list(GROUPS)],
    2: [["sip_proxy", "media", "voicebot", "speech", "llm"], ["app", "db", "monitoring"]],
    3: [["sip_proxy", "media"], ["app", "db", "monitoring"], ["voicebot", "speech", "llm"]],
    4: [["sip_proxy", "media"], ["app", "db", "monitoring"], ["voicebot", "speech"], ["llm"]],
    5: [["sip_proxy", "media"], ["app", "monitoring"], ["voicebot", "speech"], ["llm"], ["db"]],
    6: [["sip_proxy"], ["app", "monitoring"], ["voicebot", "speech"], ["llm"], ["db"], ["media"]],
    7: [["sip_proxy"], ["app"], ["voicebot", "speech"], ["llm"], ["db"], ["media"], ["monitoring"]],
    8: [["sip_proxy"], ["app"], ["voicebot"], ["llm"], ["db"], ["media"], ["monitoring"], ["speech"]],
}
# Past 8 hosts, extra hosts scale out the groups that take more hosts (a second db is a replica).
_SCALE_OUT = ["voicebot", "media", "sip_proxy", "app", "llm", "speech", "db"]


def spread_groups(hosts: int) -> list[list[str]]:
    """Groups per host, in host order; every group gets at least one host."""
    if hosts < 1:
        raise ValueError("a lab has at least one host")
    if hosts in _LAYOUTS:
        return [list(g) for g in _LAYOUTS[hosts]]
    layout = [list(g) for g in _LAYOUTS[8]]
    for extra in range(hosts - 8):
        layout.append([_SCALE_OUT[extra % len(_SCALE_OUT)]])
    return layout


def render_inventory(plan: LabPlan, key_file: Path, known_hosts: Path) -> str:
    layout = spread_groups(len(plan.hosts))
    lines = [
        f"# aicc lab {plan.name!r}: {len(plan.hosts)} systemd-nspawn hosts on {plan.subnet}.",
        "# Written by `aicc lab up`; rewritten on each `lab up` (settings and secrets are kept).",
        "[all:vars]",
        "ansible_user=root",
        "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_private_key_file={key_file.resolve()}",
        "ansible_ssh_common_args='-o UserKnownHostsFile="
        f"{known_hosts.resolve()} -o StrictHostKeyChecking=yes'",
        "",
    ]
    first_line_done: set[str] = set()
    for group in GROUPS:
        lines.append(f"[{group}]")
        for host, groups in zip(plan.hosts, layout, strict=True):
            if group not in groups:
                continue
            # The inventory parser wants a host's variables once; later lines name the host alone.
            if host.name in first_line_done:
                lines.append(host.name)
            else:
                lines.append(f"{host.name} ansible_host={host.address}")
                first_line_done.add(host.name)
        lines.append("")
    return "\n".join(lines)


def groups_by_host(plan: LabPlan) -> dict[str, list[str]]:
    return {h.name: g for h, g in zip(plan.hosts, spread_groups(len(plan.hosts)), strict=True)}
