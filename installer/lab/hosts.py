"""One lab host: its overlay upper folder (identity, keys) and its systemd-nspawn process."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from aicc.installer.lab.plan import HostPlan, LabPlan
from aicc.installer.lab.procs import spawn
from aicc.installer.lab.ssh import host_keygen
from aicc.installer.lab.state import Resource

RESOLV_CONF = """\
# aicc lab host: no DNS and no internet by design. Lab hosts are listed in /etc/hosts.
options timeout:1 attempts:1
"""


MASKED_UNITS = ("systemd-remount-fs.service", "systemd-tmpfiles-setup-dev.service")
# Run over SSH once a host answers: waits for the end of its boot, then restarts each unit that failed
# during it, once, and prints "UNIT STATUS" for each. Now and then another unit of the boot fails
# too (seen: systemd-user-sessions, once in about 30 boots, during a test run); a new host holds
# nothing of aicc yet, and a unit that fails again stays failed: that one is real.
SETTLE_BOOT = (
    "systemctl is-system-running --wait >/dev/null 2>&1; "
    "for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do "
    'echo "$u $(systemctl show -P ExecMainStatus "$u")"; systemctl restart "$u"; done'
)


def upper_dir(lab_dir: Path, host: HostPlan) -> Path:
    return lab_dir / host.name / "upper"


def _mkdirs(upper: Path, lower: Path, rel: str) -> Path:
    """Create rel under upper with each folder's mode and owner taken from the image.

    An upper folder's attributes win in the merged view, so /root must stay 0700, /etc 0755, ...
    """
    path = upper
    for part in Path(rel).parts:
        path = path / part
        src = lower / path.relative_to(upper)
        if not path.exists():
            path.mkdir()
            if src.is_dir():
                st = src.stat()
                os.chown(path, st.st_uid, st.st_gid)
                path.chmod(st.st_mode & 0o7777)
    return path


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def etc_hosts(plan: LabPlan) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address}\t{h.name}" for h in plan.hosts]
    return "\n".join(lines) + "\n"


def prepare_upper(upper: Path, lower: Path, plan: LabPlan, host: HostPlan, authorized_key: str) -> str:
    """Write the host's own files into its overlay; return its SSH host public key."""
    upper.mkdir(parents=True, exist_ok=True)
    st = lower.stat()
    os.chown(upper, st.st_uid, st.st_gid)
    upper.chmod(st.st_mode & 0o7777)
    etc = _mkdirs(upper, lower, "etc")
    _write(etc / "hostname", host.name + "\n")
    _write(etc / "hosts", etc_hosts(plan))
    _write(etc / "resolv.conf", RESOLV_CONF)
    _write(etc / "machine-id", uuid.uuid4().hex + "\n", 0o444)
    sshdir = _mkdirs(upper, lower, "root/.ssh")
    sshdir.chmod(0o700)
    _write(sshdir / "authorized_keys", authorized_key + "\n", 0o600)
    # nspawn mounts the root itself; on this kind of machine (cgroup v1 host, no systemd) the first
    # units of the boot sometimes fail to attach to their cgroup; those are remount-fs and
    # tmpfiles-setup-dev, which have nothing to do in a container (nspawn provides / and /dev):
    # masked, the host reaches "running" instead of "degraded".
    units = _mkdirs(upper, lower, "etc/systemd/system")
    for unit in MASKED_UNITS:
        (units / unit).symlink_to("/dev/null")
    etc_ssh = _mkdirs(upper, lower, "etc/ssh")
    return host_keygen(etc_ssh / "ssh_host_ed25519_key", f"root@{host.name}")


def nspawn_command(lower: Path, upper: Path, host: HostPlan) -> list[str]:
    return [
        "systemd-nspawn",
        "--boot",
        "--register=no",  # no machined here (PID 1 is not systemd)
        "--keep-unit",  # likewise no scope unit to create
        "--timezone=off",
        "--resolv-conf=off",  # the upper dir carries its own
        "--console=read-only",
        f"--network-namespace-path=/run/netns/{host.netns}",
        # Lets hosts load their own nftables rules (the rtpengine role filters its control port);
        # the capability reaches only the host's own network namespace.
        "--capability=CAP_NET_ADMIN",
        "-D",
        str(lower),
        f"--overlay={lower}:{upper}:/",
        "--machine",
        host.machine,
    ]


def boot(lower: Path, upper: Path, host: HostPlan, log: Path) -> Resource:
    return spawn(nspawn_command(lower, upper, host), log, f"systemd-nspawn {host.machine}")
