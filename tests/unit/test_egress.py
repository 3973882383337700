"""`aicc egress report` reads what nftables really holds: a table dumped by nft 1.0.6 in a network
namespace with the hardening role's egress shape, after a connection to a stranger was dropped."""

from __future__ import annotations

from pathlib import Path

from aicc.installer.egress import parse

DUMP = (Path(__file__).parent / "data" / "nft-egress.json").read_text(encoding="utf-8")
KERNEL_LOG = (
    "aicc-egress-drop: IN= OUT=va SRC=10.9.9.1 DST=10.9.9.9 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF "
    "PROTO=TCP SPT=40000 DPT=443 WINDOW=64240 RES=0x00 SYN URGP=0"
)


def test_allowlist_counters_and_drops_are_read_from_the_live_table() -> None:
    row = parse("lab1", DUMP + "\n--- drops\n" + KERNEL_LOG + "\n")
    assert row.policy is True
    assert row.sets["internal4"] == ["10.0.9.0/24", "10.231.100.11", "10.231.100.12"]
    assert [a.what for a in row.allowed] == [
        "site hosts and admin sources",
        "packages: https://10.231.100.1:8790",
        "rtpengine media",
    ]
    assert row.allowed[0].rule == "daddr @internal4"
    assert row.allowed[1].rule == "daddr 10.231.100.1 dport 8790"
    assert row.allowed[2].rule == "sport 30000-40000"
    assert row.dropped_packets == 13 and row.dropped_bytes == 908
    assert row.recent_drops == [
        {"SRC": "10.9.9.1", "DST": "10.9.9.9", "PROTO": "TCP", "SPT": "40000", "DPT": "443"}
    ]


def test_a_host_without_the_table_has_no_policy() -> None:
    row = parse("lab2", "{}\n--- drops\n")
    assert row.reachable and not row.policy and not row.allowed and row.dropped_packets == 0


def test_garbage_from_nft_is_an_error_not_a_crash() -> None:
    row = parse("lab3", "nft: command not found\n--- drops\n")
    assert row.error == "nft printed no JSON"
