"""Inventory: the example parses; mistakes are reported with file, line and fix; Ansible agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aicc.installer.errors import InputError
from aicc.installer.inventory import load_inventory, parse_inventory
from aicc.installer.sizing import GROUPS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory.example.ini"

ALL_GROUPS_ONE_HOST = "".join(
    f"[{g}]\nh1 ansible_host=10.0.0.1\n" if i == 0 else f"[{g}]\nh1\n" for i, g in enumerate(GROUPS)
)


def parse(text: str) -> object:
    return parse_inventory(text, Path("inv.ini"))


def test_example_inventory_is_valid_and_covers_every_group() -> None:
    inv = load_inventory(EXAMPLE)
    for group in GROUPS:
        assert inv.group(group), f"example has no host in [{group}]"


def test_ansible_reads_the_example_the_same_way() -> None:
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    out = subprocess.run(
        [str(ansible_inventory), "-i", str(EXAMPLE), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"},
    )
    data = json.loads(out.stdout)
    ours = load_inventory(EXAMPLE)
    for group in GROUPS:
        assert sorted(data[group]["hosts"]) == sorted(h.name for h in ours.group(group))
    for host in ours.hosts.values():
        assert data["_meta"]["hostvars"][host.name].get("ansible_host", host.name) == host.address


def test_unknown_group_names_line_and_suggests() -> None:
    with pytest.raises(InputError) as err:
        parse(ALL_GROUPS_ONE_HOST + "[sip_proxies]\nh2 ansible_host=10.0.0.2\n")
    assert "inv.ini:17" in str(err.value)
    assert "did you mean [sip_proxy]" in str(err.value)


def test_required_group_empty() -> None:
    text = ALL_GROUPS_ONE_HOST.replace("[db]\nh1\n", "[db]\n")
    with pytest.raises(InputError, match=r"required group\(s\) with no host: db"):
        parse(text)


def test_host_outside_any_group() -> None:
    with pytest.raises(InputError, match=r"inv.ini:1: host line 'stray' is before any \[group\]"):
        parse("stray\n" + ALL_GROUPS_ONE_HOST)


def test_duplicate_address() -> None:
    with pytest.raises(InputError, match=r"h1 and h2 have the same address 10.0.0.1"):
        parse(ALL_GROUPS_ONE_HOST + "[app]\nh2 ansible_host=10.0.0.1\n")


def test_placeholder_address_from_init_is_refused() -> None:
    with pytest.raises(InputError, match=r"placeholder address 192\.0\.2\.10"):
        parse(ALL_GROUPS_ONE_HOST.replace("10.0.0.1", "192.0.2.10"))


def test_vars_merge_and_selection() -> None:
    inv = parse_inventory(
        "[all:vars]\nansible_user=deploy\n"
        + ALL_GROUPS_ONE_HOST
        + "[app]\nh2 ansible_host=10.0.0.2 ansible_port=2222\n",
        Path("inv.ini"),
    )
    h2 = inv.hosts["h2"]
    assert (h2.user, h2.port, h2.address, h2.groups) == ("deploy", 2222, "10.0.0.2", ["app"])
    assert {h.name for h in inv.select("app")} == {"h1", "h2"}
    assert [h.name for h in inv.select("h2")] == ["h2"]
    with pytest.raises(InputError, match="matches no host or group"):
        inv.select("nosuch")


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inventory not found") as err:
        load_inventory(tmp_path / "inventory.ini")
    assert "aicc init" in (err.value.fix or "")


def test_limit_may_name_localhost_for_the_installer_play() -> None:
    """The pki play runs on the installer host: `--limit h2,localhost` is how a partial run keeps it."""
    inv = parse_inventory(ALL_GROUPS_ONE_HOST + "[app]\nh2 ansible_host=10.0.0.2\n", Path("inv.ini"))
    assert [h.name for h in inv.select("h2,localhost")] == ["h2"]
    with pytest.raises(InputError, match="localhost: the installer's own play"):
        inv.select("nosuchhost")
