"""Inventory: the example parses; mistakes are reported with file, line and fix; Ansible agrees."""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aicc.installer.addresses import address_problem
from aicc.installer.errors import InputError
from aicc.installer.inventory import load_inventory, parse_inventory
from aicc.installer.sizing import GROUPS
from tests.unit.hostile_files import HOSTILE, Hostile, write

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


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_an_inventory_that_is_not_utf8_text_is_an_input_error(tmp_path: Path, case: Hostile) -> None:
    path = write(tmp_path, case, "inventory.ini")
    with pytest.raises(InputError) as err:
        load_inventory(path)
    assert str(err.value).startswith(f"{path}:{case.line}: inventory is ")
    assert case.says in err.value.message and err.value.fix


def test_inventory_edge_files(tmp_path: Path) -> None:
    (tmp_path / "empty.ini").write_bytes(b"")
    with pytest.raises(InputError, match="the inventory lists no hosts"):
        load_inventory(tmp_path / "empty.ini")
    with pytest.raises(InputError, match="inventory is a folder, not a file"):
        load_inventory(tmp_path)
    chinese = tmp_path / "zh.ini"
    chinese.write_bytes(
        codecs.BOM_UTF8 + ("# 北京站点的主机\n" + ALL_GROUPS_ONE_HOST).encode().replace(b"\n", b"\r\n")
    )
    assert load_inventory(chinese).hosts["h1"].address == "10.0.0.1"


GOOD_ADDRESSES = [
    "10.0.0.1",
    "0.0.0.1",
    "255.255.255.254",
    "172.16.5.4",
    "fd00::5",
    "2001:db8:0:1::10",
    "::ffff:10.0.0.9",
    "FD00:0:0:0:0:0:0:A",
    "lab1",
    "h",
    "host-01.example.cn",
    "aicc-01.bj.corp",
    "1host.example",
    "a" * 63 + ".example.cn",
    "xn--fiqs8s.cn",
    "1.2.3.4a",
    "UPPER.Example.COM",
]
BAD_ADDRESSES = [
    ("300.1.1.1", "neither a valid IP address (octet 300 > 255) nor a host name"),
    ("256.0.0.1", "octet 256 > 255"),
    ("10.0.0", "3 numbers, an IPv4 address has 4"),
    ("1.2.3.4.5", "5 numbers, an IPv4 address has 4"),
    ("010.1.1.1", "octet 010 has a leading zero"),
    ("10.0.0.01", "octet 01 has a leading zero"),
    ("167772161", "1 number, an IPv4 address has 4"),
    ("host.123", "its last label 123 is all digits"),
    ("host_name", "'_' is not allowed"),
    ("-a.b", "label '-a' starts or ends with '-'"),
    ("a-.b", "label 'a-' starts or ends with '-'"),
    ("a..b", "an empty label"),
    ("a.b.", "an empty label"),
    (".a.b", "an empty label"),
    ("a" * 64 + ".cn", "has 64 characters, at most 63"),
    (".".join(["abcdefghi"] * 26), "259 characters, at most 253"),
    ("主机.example.cn", "punycode"),
    ("host!", "'!' is not allowed"),
    ("fe80::1%eth0", "a zone index"),
    ("[fd00::5]", "without brackets"),
    ("fd00::5::1", "not a valid IPv6 address"),
    ("10.0.0.1:22", "not a valid IPv6 address"),
    ("gggg::1", "not a valid IPv6 address"),
]


@pytest.mark.parametrize("address", GOOD_ADDRESSES)
def test_valid_addresses_are_accepted(address: str) -> None:
    assert address_problem(address) is None
    inv = parse_inventory(ALL_GROUPS_ONE_HOST.replace("10.0.0.1", address), Path("inv.ini"))
    assert inv.hosts["h1"].address == address


@pytest.mark.parametrize(("address", "why"), BAD_ADDRESSES, ids=[b[0][:30] for b in BAD_ADDRESSES])
def test_invalid_addresses_say_why_with_file_and_line(address: str, why: str) -> None:
    assert why in (address_problem(address) or "")
    with pytest.raises(InputError) as err:
        parse_inventory("# hosts\n" + ALL_GROUPS_ONE_HOST.replace("10.0.0.1", address), Path("inv.ini"))
    assert str(err.value).startswith("inv.ini:3: host h1: invalid address: ")
    assert why in str(err.value) and "host name" in (err.value.fix or "")


@pytest.mark.parametrize(("name", "why"), [*BAD_ADDRESSES[:10], ("h1:2222", "not a valid IPv6")])
def test_inventory_host_names_follow_the_same_rule(name: str, why: str) -> None:
    text = ALL_GROUPS_ONE_HOST + f"[app]\n{name} ansible_host=10.0.0.2\n"
    with pytest.raises(InputError) as err:
        parse_inventory(text, Path("inv.ini"))
    assert str(err.value).startswith("inv.ini:18: invalid host name: ") and why in str(err.value)


def test_an_ip_address_may_be_the_host_name() -> None:
    inv = parse_inventory(ALL_GROUPS_ONE_HOST + "[app]\n10.0.0.2\n[db]\nfd00::7\n", Path("inv.ini"))
    assert inv.hosts["10.0.0.2"].address == "10.0.0.2" and inv.hosts["fd00::7"].address == "fd00::7"
