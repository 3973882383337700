"""Preflight checks as pure functions of gathered facts: each problem is named with a fix."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aicc.installer.inventory import parse_inventory
from aicc.installer.preflight import Check, evaluate
from aicc.installer.remote import Result
from aicc.installer.settings import SiteSettings
from aicc.installer.sizing import GROUPS

INVENTORY = parse_inventory(
    "[sip_proxy]\nh1 ansible_host=10.0.0.1\n[media]\nh1\n"
    + "".join(f"[{g}]\nh2 ansible_host=10.0.0.2\n" for g in GROUPS if g not in ("sip_proxy", "media")),
    Path("inv.ini"),
)
SETTINGS = SiteSettings(profile="single")


def facts(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time": time.time(),
        "user": 0,
        "os": {"id": "debian", "version_id": "12", "pretty": "Debian GNU/Linux 12 (bookworm)"},
        "cpus": 16,
        "mem_total_kib": 64 * 2**20,
        "disk_free_gib": 500.0,
        "listeners": [{"proto": "tcp", "port": 22, "process": "sshd"}],
        "ntp_synced": True,
        "gpu": {"driver": False, "devices": []},
        "python": "3.11.2",
        "self": {"hostname": "h", "ok": True},
        "peers": {"10.0.0.1:9100": {"ok": True}, "10.0.0.2:9100": {"ok": True}},
    }
    base.update(over)
    return base


def run(
    h1: dict[str, Any] | Result, h2: dict[str, Any] | None = None, settings: SiteSettings = SETTINGS
) -> list[Check]:
    now = time.time()

    def wrap(name: str, f: dict[str, Any] | Result) -> tuple[Result, float, float]:
        res = f if isinstance(f, Result) else Result(name, 0, json.dumps(f), "")
        return res, now, now + 0.05

    return evaluate(INVENTORY, settings, {"h1": wrap("h1", h1), "h2": wrap("h2", h2 or facts())})


def failed(checks: list[Check]) -> list[tuple[str, str]]:
    return [(c.host, c.check) for c in checks if c.status == "fail"]


def test_healthy_hosts_pass_every_check() -> None:
    checks = run(facts())
    assert failed(checks) == []
    assert {c.check for c in checks} >= {"ssh", "os", "cpu", "memory", "disk", "ports", "clock", "network"}


def test_unreachable_host_is_one_fail_row_with_a_fix() -> None:
    checks = run(Result("h1", 255, "", "ssh: connect to host 10.0.0.1 port 22: No route to host"))
    assert failed(checks) == [("h1", "ssh")]
    row = next(c for c in checks if c.host == "h1")
    assert "No route to host" in row.message and row.fix


def test_other_os_is_unsupported() -> None:
    checks = run(facts(os={"id": "ubuntu", "version_id": "22.04", "pretty": "Ubuntu 22.04.4 LTS"}))
    row = next(c for c in checks if c.check == "os" and c.host == "h1")
    assert row.status == "fail" and "unsupported" in row.message and "Ubuntu 22.04" in row.message


def test_resources_are_summed_over_the_groups_of_a_host() -> None:
    # h2 holds six groups: production needs the sum of their RAM (8+4+8+8+8+4 = 40 GiB).
    checks = run(facts(), facts(mem_total_kib=32 * 2**20))
    row = next(c for c in checks if c.check == "memory" and c.host == "h2")
    assert row.status == "fail" and "need 40" in row.message


def test_port_taken_by_another_process_fails_but_our_own_service_is_fine() -> None:
    taken = facts(listeners=[{"proto": "udp", "port": 5060, "process": "asterisk"}])
    assert ("h1", "ports") in failed(run(taken))
    ours = facts(listeners=[{"proto": "udp", "port": 5060, "process": "kamailio"}])
    assert ("h1", "ports") not in failed(run(ours))


def test_clock_skew_fails() -> None:
    checks = run(facts(time=time.time() - 30))
    row = next(c for c in checks if c.check == "clock" and c.host == "h1")
    assert row.status == "fail" and "off" in row.message


def test_unreachable_peer_is_named() -> None:
    checks = run(facts(peers={"10.0.0.2:9100": {"ok": False, "error": "Connection timed out"}}))
    row = next(c for c in checks if c.check == "network" and c.host == "h1")
    assert row.status == "fail" and "h2 (10.0.0.2:9100)" in row.message


def test_a_peer_that_refuses_the_port_was_reached() -> None:
    # Before install nothing listens on node_exporter's port: a refusal proves the host answers.
    refused = {"ok": False, "answered": True, "error": "Connection refused"}
    checks = run(facts(peers={"10.0.0.2:9100": refused}))
    row = next(c for c in checks if c.check == "network" and c.host == "h1")
    assert row.status == "ok", row


def test_llm_engine_choice_is_explained() -> None:
    no_gpu = next(c for c in run(facts(), facts()) if c.check == "llm engine")
    assert no_gpu.status == "ok" and "llama.cpp" in no_gpu.message and "no NVIDIA driver" in no_gpu.message
    gpu = facts(gpu={"driver": True, "devices": [{"name": "H100", "memory_mib": 81559}]})
    assert "vLLM" in next(c for c in run(facts(), gpu) if c.check == "llm engine").message
    want_vllm = SiteSettings.model_validate({"engines": {"llm": "vllm"}})
    forced = next(c for c in run(facts(), facts(), want_vllm) if c.check == "llm engine")
    assert forced.status == "fail" and "llamacpp" in forced.fix


def test_hosts_must_reach_the_bundle_server_of_this_machine(monkeypatch: Any) -> None:
    """packages.source=bundle without a url: the hosts install from this machine, which serves the bundle
    only during an install; a refused connection proves the path, a timeout (a firewall) does not."""
    import aicc.installer.bundle.serve as serve

    monkeypatch.setattr(serve, "source_address", lambda peer: "10.0.0.9")
    base = {"10.0.0.1:9100": {"ok": True}, "10.0.0.2:9100": {"ok": True}}
    refused = {"ok": False, "answered": True, "error": "Connection refused"}
    checks = run(facts(peers={**base, "10.0.0.9:8790": refused}))
    row = next(c for c in checks if c.host == "h1" and c.check == "packages")
    assert row.status == "ok" and "https://10.0.0.9:8790/" in row.message
    checks = run(facts(peers={**base, "10.0.0.9:8790": {"ok": False, "error": "Connection timed out"}}))
    row = next(c for c in checks if c.host == "h1" and c.check == "packages")
    assert row.status == "fail" and "Connection timed out" in row.message and row.fix


def test_preflight_fails_an_enabled_channel_without_its_secrets_and_warns_about_a_named_api(
    tmp_path: Path,
) -> None:
    from aicc.installer.preflight import site_checks
    from aicc.installer.site import init_site

    site = init_site(tmp_path, profile="single")
    assert site_checks(SETTINGS, site.secrets_path) == []  # no channel: nothing to check
    settings = SiteSettings.model_validate(
        {
            "channels": {
                "wecom": {"enabled": True, "corp_id": "ww0123456789abcdef"},
                "wechat_oa": {
                    "enabled": True,
                    "app_id": "wx0123456789abcdef",
                    "api_base_url": "https://10.0.0.9:8443",
                },
            }
        }
    )
    with site.secrets_path.open("a", encoding="utf-8") as fh:
        fh.write('wechat_oa_app_secret: "s3cr3t-app-secret"\nwechat_oa_token: "tok3n"\n')
        fh.write('wechat_oa_encoding_aes_key: "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"\n')
    checks = site_checks(settings, site.secrets_path)
    fails = [c for c in checks if c.status == "fail"]
    assert [c.message.split(": ")[1].split(" ")[0] for c in fails] == [
        "wecom_secret",
        "wecom_token",
        "wecom_encoding_aes_key",
    ]
    assert all(
        c.host == "site" and str(site.secrets_path) in c.message and "secrets.yml" in c.fix for c in fails
    )
    assert "s3cr3t-app-secret" not in json.dumps([c.__dict__ for c in checks])
    egress = {c.message.split(":")[0]: c for c in checks if c.check == "channel egress"}
    named = egress["channels.wecom"]
    assert named.status == "warn" and "qyapi.weixin.qq.com is a name" in named.message
    assert "hardening.egress_allow" in named.fix
    (ok,) = [c for c in checks if c.check == "channel egress" and c.status == "ok"]
    assert "10.0.0.9 tcp 8443" in ok.message
