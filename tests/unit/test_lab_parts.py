"""Pure parts of the lab: image recipe hash, host files, state, prerequisites, apt forwarder, site."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aicc.installer.lab import hosts, image, prereqs
from aicc.installer.lab.plan import make_plan
from aicc.installer.lab.sitefiles import write_site
from aicc.installer.lab.state import (
    LabState,
    Resource,
    load_state,
    proc_start_time,
    process_alive,
    save_state,
)
from aicc.installer.settings import load_settings
from aicc.installer.site import load_secrets


def test_recipe_hash_follows_the_code_that_builds_the_image() -> None:
    source = Path(image.__file__).read_bytes()
    assert image.recipe_hash() == image.recipe_hash(source)
    assert image.recipe_hash(source + b"\n# changed") != image.recipe_hash(source)
    assert len(image.recipe_hash()) == 64
    assert image.image_dir(Path("/c")).name == f"base-{image.recipe_hash()[:16]}"


def test_recipe_hash_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.recipe_hash()
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "curl"))
    assert image.recipe_hash() != before


def test_a_half_built_image_is_not_taken_for_a_cached_one(tmp_path: Path) -> None:
    (image.rootfs(tmp_path)).mkdir(parents=True)
    assert not image.is_cached(tmp_path)  # recipe.json is written last, just before the rename
    (image.image_dir(tmp_path) / "recipe.json").write_text("{}")
    assert image.is_cached(tmp_path)


def test_cache_root_env_and_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(image.CACHE_ENV, raising=False)
    assert image.cache_root() == Path("/var/cache/aicc/lab")
    monkeypatch.setenv(image.CACHE_ENV, str(tmp_path))
    assert image.cache_root() == tmp_path
    assert image.cache_root(tmp_path / "x") == tmp_path / "x"


def test_host_files_name_the_host_and_point_apt_at_the_bridge() -> None:
    plan = make_plan("dev1", "10.231.1.0/24", 3)
    text = hosts.etc_hosts(plan)
    assert "10.231.1.12\tlab2" in text and "127.0.0.1\tlocalhost" in text
    assert "nameserver" not in hosts.RESOLV_CONF


def test_nspawn_command_has_every_flag_the_lab_needs(tmp_path: Path) -> None:
    plan = make_plan("dev1", "10.231.1.0/24", 1)
    cmd = hosts.nspawn_command(tmp_path / "lower", tmp_path / "upper", plan.hosts[0])
    for flag in ("--boot", "--register=no", "--keep-unit", "--timezone=off", "--resolv-conf=off"):
        assert flag in cmd
    assert "--network-namespace-path=/run/netns/aicc-dev1-lab1" in cmd
    assert f"--overlay={tmp_path / 'lower'}:{tmp_path / 'upper'}:/" in cmd
    assert cmd[cmd.index("--machine") + 1] == "dev1-lab1"


def test_prepare_upper_keeps_folder_modes_and_makes_a_host_key(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d, mode in (("etc", 0o755), ("etc/ssh", 0o755), ("root", 0o700), ("etc/apt/apt.conf.d", 0o755)):
        (lower / d).mkdir(parents=True, exist_ok=True)
        (lower / d).chmod(mode)
    plan = make_plan("dev1", "10.231.1.0/24", 2)
    pub = hosts.prepare_upper(upper, lower, plan, plan.hosts[1], "ssh-ed25519 AAAAtest lab")
    assert pub.startswith("ssh-ed25519 ") and pub.endswith("root@lab2")
    assert (upper / "etc/hostname").read_text() == "lab2\n"
    assert stat.S_IMODE((upper / "root").stat().st_mode) == 0o700
    assert stat.S_IMODE((upper / "root/.ssh/authorized_keys").stat().st_mode) == 0o600
    assert stat.S_IMODE((upper / "etc/ssh/ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert len((upper / "etc/machine-id").read_text().strip()) == 32
    assert (upper / "etc/systemd/system/systemd-remount-fs.service").readlink() == Path("/dev/null")


def test_state_round_trips_and_process_identity_includes_start_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AICC_LAB_STATE", str(tmp_path))
    plan = make_plan("dev1", "10.231.1.0/24", 1)
    me = Resource(kind="process", name="me", pid=os.getpid(), start_time=proc_start_time(os.getpid()))
    state = LabState(plan=plan, site="/s", image="/i", resources=[me])
    save_state(state)
    assert load_state("dev1") == state
    assert process_alive(me)
    assert not process_alive(me.model_copy(update={"start_time": (me.start_time or 0) + 1}))  # a recycled pid
    assert load_state("other") is None


def test_missing_prerequisites_are_named_by_package() -> None:
    assert prereqs.missing_packages(lambda cmd: None) == list(prereqs.HOST_PACKAGES)
    present = {"systemd-nspawn", "ip", "ssh-keygen"}
    assert prereqs.missing_packages(lambda cmd: cmd if cmd in present else None) == ["mmdebstrap"]


def test_site_keeps_secrets_and_follows_a_new_subnet(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_site(site, make_plan("dev1", "10.231.1.0/24", 3))
    secrets = load_secrets(site / "secrets.yml")
    settings = load_settings(site / "aicc.yml")
    assert settings.profile == "lab" and settings.packages.source == "bundle"
    assert settings.packages.url == ""

    write_site(site, make_plan("dev1", "10.231.7.0/24", 1))
    assert load_secrets(site / "secrets.yml") == secrets
    assert load_settings(site / "aicc.yml").packages.source == "bundle"
    assert "lab1 ansible_host=10.231.7.11" in (site / "inventory.ini").read_text()


def test_prune_keeps_the_current_image_and_images_labs_run_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aicc.installer.lab.cache import prunable, prune

    monkeypatch.setenv("AICC_LAB_STATE", str(tmp_path / "state"))
    root = tmp_path / "cache"
    current, used, old = image.image_dir(root), root / "base-0000000000000001", root / "base-0000000000000002"
    for d in (current, used, old):
        (d / "rootfs").mkdir(parents=True)
    plan = make_plan("dev1", "10.231.1.0/24", 1)
    save_state(LabState(plan=plan, site="/s", image=str(used / "rootfs")))
    assert prunable(root) == [old]
    assert prune(root) == [old]
    assert current.is_dir() and used.is_dir() and not old.exists()


def test_removal_refuses_a_folder_with_a_mount_below_it(tmp_path: Path) -> None:
    from aicc.installer.lab.fsutil import mounts_under

    base = tmp_path / "cache" / ".tmp-base-x"
    info = (
        f"40 23 0:5 / {base}/rootfs/proc rw - proc proc rw\n"
        f"41 23 0:6 / {tmp_path}/cache/.tmp-base-xy rw - tmpfs tmpfs rw\n"
        "42 23 0:7 / /proc rw - proc proc rw\n"
    )
    assert mounts_under(base, info) == [f"{base}/rootfs/proc"]
    assert mounts_under(tmp_path / "elsewhere", info) == []
    assert "rootfs/proc" in " ".join(mounts_under(tmp_path, info))


def test_inotify_limits_are_raised_never_lowered(tmp_path: Path) -> None:
    (tmp_path / "fs/inotify").mkdir(parents=True)
    (tmp_path / "fs/inotify/max_user_instances").write_text("128\n")
    (tmp_path / "fs/inotify/max_user_watches").write_text("500000\n")
    said: list[str] = []
    changed = prereqs.ensure_kernel_limits(said.append, proc_sys=tmp_path)
    assert changed == ["fs/inotify/max_user_instances"]
    assert (tmp_path / "fs/inotify/max_user_instances").read_text() == "1024\n"
    assert (tmp_path / "fs/inotify/max_user_watches").read_text() == "500000\n"
    assert "from 128 to 1024" in said[0]
    assert prereqs.ensure_kernel_limits(said.append, proc_sys=tmp_path) == []


def test_the_lab_egress_policy_allows_the_subnet_only_and_refuses_fast() -> None:
    from aicc.installer.lab import net

    rules = net.egress_ruleset("10.231.5.0/24")
    assert "ip daddr 10.231.5.0/24 accept" in rules and 'oif "lo" accept' in rules
    assert "reject with tcp reset" in rules  # a TCP connect fails at once instead of hanging apt
    assert rules.index("delete table inet aicc_lab") < rules.index("chain output")  # reloading replaces it


def test_lab_status_names_what_tried_to_leave() -> None:
    from aicc.installer.lab.cli import _egress_cell
    from aicc.installer.lab.net import EgressAttempts

    assert _egress_cell(EgressAttempts(policy=True)) == "nothing"
    assert "NO POLICY" in _egress_cell(EgressAttempts(policy=False))
    many = EgressAttempts(policy=True, packets=9, tried=[f"192.0.2.{i} tcp/80" for i in range(5)])
    assert _egress_cell(many) == "9 packets refused: 192.0.2.0 tcp/80, 192.0.2.1 tcp/80, 192.0.2.2 tcp/80 +2"


def test_egress_attempts_are_read_from_the_real_nft_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/unit/data/nft-lab-egress.json: `nft -j list table inet aicc_lab` in a namespace under the
    lab's policy after a TCP connect to 192.0.2.1:80 and a UDP send to 198.51.100.7:53 (refused) and
    one to the lab's own bridge (allowed, not counted)."""
    import subprocess

    from aicc.installer.lab import net

    dump = (Path(__file__).parent / "data" / "nft-lab-egress.json").read_text(encoding="utf-8")

    def fake_nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(["nft", *args], 0, dump, "")

    monkeypatch.setattr(net, "_nft", fake_nft)
    got = net.egress_attempts("aicc-dev1-lab1")
    assert got.policy and got.packets == 3
    assert got.tried == ["192.0.2.1 tcp/80", "198.51.100.7 udp/53"]

    def no_table(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(["nft", *args], 1, "", "Error: No such file or directory")

    monkeypatch.setattr(net, "_nft", no_table)
    assert net.egress_attempts("aicc-dev1-lab1").policy is False
