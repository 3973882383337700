"""The lab's name and address plan, and the spread of inventory groups over its hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicc.installer.errors import InputError
from aicc.installer.inventory import parse_inventory
from aicc.installer.lab.groups import render_inventory, spread_groups
from aicc.installer.lab.plan import IFNAMSIZ, MAX_HOSTS, LabPlan, make_plan
from aicc.installer.sizing import GROUPS


def test_addresses_bridge_first_then_hosts_from_11() -> None:
    plan = make_plan("aicc", "10.231.0.0/24", 3)
    assert plan.bridge_address == "10.231.0.1"
    assert [h.address for h in plan.hosts] == ["10.231.0.11", "10.231.0.12", "10.231.0.13"]
    assert [h.name for h in plan.hosts] == ["lab1", "lab2", "lab3"]


def test_interface_names_fit_the_kernel_limit_for_the_longest_name_and_most_hosts() -> None:
    plan = make_plan("abcdefgh", "10.231.9.0/24", MAX_HOSTS)
    names = [plan.bridge, *(h.veth for h in plan.hosts)]
    assert max(len(n) for n in names) <= IFNAMSIZ
    assert len(set(names)) == len(names)


def test_two_labs_share_no_kernel_object_name() -> None:
    a, b = make_plan("dev1", "10.231.1.0/24", 3), make_plan("dev2", "10.231.2.0/24", 3)

    def names(plan: LabPlan) -> set[str]:
        return {plan.bridge, *(n for h in plan.hosts for n in (h.veth, h.netns, h.machine))}

    assert not names(a) & names(b)


@pytest.mark.parametrize("name", ["", "Aicc", "1lab", "lab_1", "toolongname", "a-b"])
def test_bad_lab_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InputError) as err:
        make_plan(name, "10.231.0.0/24", 3)
    assert err.value.where == "--name" and "1-8 characters" in (err.value.fix or "")


@pytest.mark.parametrize(
    ("subnet", "words"),
    [
        ("192.168.1.0/24", "outside 10.231.0.0/16"),
        ("10.231.0.1/24", "invalid subnet"),
        ("nonsense", "invalid subnet"),
        ("10.231.0.0/29", "too small"),
        ("fd00::/64", "outside"),
    ],
)
def test_bad_subnets_are_refused(subnet: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        make_plan("aicc", subnet, 3)
    assert words in err.value.message and err.value.where == "--subnet"


@pytest.mark.parametrize("hosts", [0, MAX_HOSTS + 1])
def test_host_count_is_bounded(hosts: int) -> None:
    with pytest.raises(InputError, match="--hosts"):
        make_plan("aicc", "10.231.0.0/24", hosts)


def test_three_hosts_get_the_documented_spread() -> None:
    assert spread_groups(3) == [
        ["sip_proxy", "media"],
        ["app", "db", "monitoring"],
        ["voicebot", "speech", "llm"],
    ]


def test_one_host_holds_every_group() -> None:
    assert sorted(spread_groups(1)[0]) == sorted(GROUPS)


@pytest.mark.parametrize("hosts", range(1, 21))
def test_every_group_has_a_host_and_every_host_a_group(hosts: int) -> None:
    layout = spread_groups(hosts)
    assert len(layout) == hosts
    assert all(layout)
    assert set().union(*layout) == set(GROUPS)
    assert all(set(g) <= set(GROUPS) for g in layout)


@pytest.mark.parametrize("hosts", [1, 2, 3, 5, 9])
def test_rendered_inventory_passes_the_strict_parser(hosts: int, tmp_path: Path) -> None:
    plan = make_plan("dev1", "10.231.1.0/24", hosts)
    text = render_inventory(plan, tmp_path / "ssh" / "id_ed25519", tmp_path / "ssh" / "known_hosts")
    inv = parse_inventory(text, tmp_path / "inventory.ini")
    assert {h.name: h.address for h in inv.hosts.values()} == {h.name: h.address for h in plan.hosts}
    assert {h: sorted(inv.groups_of(h)) for h in inv.hosts} == {
        h.name: sorted(g) for h, g in zip(plan.hosts, spread_groups(hosts), strict=True)
    }
    v = inv.all_vars
    assert v["ansible_user"] == "root" and v["ansible_python_interpreter"] == "/usr/bin/python3"
    assert v["ansible_ssh_private_key_file"] == str((tmp_path / "ssh" / "id_ed25519").resolve())
    assert v["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={(tmp_path / 'ssh' / 'known_hosts').resolve()} -o StrictHostKeyChecking=yes"
    )
