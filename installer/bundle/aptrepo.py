"""The bundle's Debian repository: the closure of every package the roles name, resolved against a
clean Debian 12 (the lab's minbase image: what any fresh host already has), downloaded once into a
cache, and indexed with apt-ftparchive and signed with the bundle's release key.

apt runs here with its own lists, cache and status file (the clean image's), so the installer
machine's own packages and sources play no part and nothing on it changes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aicc.installer import gnupg
from aicc.installer.errors import InputError, RunFailed

SUITE = "bookworm"
ARCH = "amd64"
COMPONENT = "main"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCES = (
    f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {SUITE} main",
    f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {SUITE}-updates main",
    f"deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {SUITE}-security main",
)
PUBLIC_KEY = "bundle-key.asc"
Log = Callable[[str], None]
# apt-get -s: "Inst NAME [OLD] (VERSION ORIGIN [ARCH])"
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[([a-z0-9]+)\]\)")


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    arch: str
    path: Path
    source: str  # "debian" or "customer"

    @property
    def file_name(self) -> str:
        return _deb_file(self.name, self.version, self.arch)


def _apt_options(work: Path, status: Path) -> list[str]:
    lists, archives = work / "lists", work / "archives"
    for d in (lists / "partial", archives / "partial", work / "parts", work / "prefs"):
        d.mkdir(parents=True, exist_ok=True)
    sources = work / "sources.list"
    sources.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    return [
        "-o", f"Dir::State::status={status}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={work}",
        "-o", f"Dir::Cache::Archives={archives}",
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={work / 'parts'}",
        "-o", f"Dir::Etc::Preferences={work / 'prefs' / 'none'}",
        "-o", f"Dir::Etc::PreferencesParts={work / 'prefs'}",
        "-o", f"APT::Architecture={ARCH}",
        "-o", f"APT::Architectures={ARCH}",
        "-o", "APT::Install-Recommends=false",
        "-o", "Debug::NoLocking=1",
        "-o", "Acquire::Retries=3",
        "-o", "Acquire::http::Timeout=30",
    ]  # fmt: skip


def _apt(args: list[str], work: Path) -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    proc = subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.startswith(("E:", "W:"))]
        raise RunFailed(
            f"apt could not resolve the bundle's packages: {' | '.join(lines[-4:]) or proc.returncode}",
            where=str(work),
            fix="check that deb.debian.org is reachable from this machine and the package names in the roles",
        )
    return proc.stdout


def _deb_file(name: str, version: str, arch: str) -> str:
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def resolve(
    packages: list[str], extra_debs: list[Path], status: Path, work: Path, log: Log = print
) -> list[Deb]:
    """Download the closure of `packages` (and of the customer's .debs) that a host whose dpkg status
    is `status` lacks; the named packages themselves always, even where the image has them."""
    for deb in extra_debs:
        if not deb.is_file() or deb.suffix != ".deb":
            raise InputError("not a .deb file", where=str(deb), fix="pass --with-deb PATH/TO/package.deb")
    opts = _apt_options(work, status)
    log("apt: updating the Debian 12 package lists ...")
    _apt([*opts, "-q", "update"], work)
    wanted = [*packages, *(str(d.resolve()) for d in extra_debs)]
    plan = _apt([*opts, "-s", "-y", "install", "--reinstall", *wanted], work)
    debs: list[tuple[str, str, str]] = []
    for line in plan.splitlines():
        m = _INST.match(line)
        if m:
            debs.append((m.group(1), m.group(2), m.group(3)))
    if not debs:
        raise RunFailed("apt planned no package at all", where=str(work))
    log(
        f"apt: {len(debs)} packages in the closure of {len(packages)} named; "
        "downloading what is not cached ..."
    )
    _apt([*opts, "-q", "-y", "--download-only", "install", "--reinstall", *wanted], work)
    customer = {_control_name(d): d for d in extra_debs}
    found: list[Deb] = []
    for name, version, arch in debs:
        if name in customer:
            found.append(Deb(name, version, arch, customer[name], "customer"))
            continue
        path = work / "archives" / _deb_file(name, version, arch)
        if not path.is_file():
            raise RunFailed(f"apt did not download {path.name}", where=str(work / "archives"))
        found.append(Deb(name, version, arch, path, "debian"))
    return found


def _control_name(deb: Path) -> str:
    proc = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise InputError("not a Debian package (dpkg-deb cannot read it)", where=str(deb))
    return proc.stdout.strip()


def package_names(repo: Path) -> set[str]:
    """The packages a built repository offers (its Packages index)."""
    index = repo / "dists" / SUITE / COMPONENT / f"binary-{ARCH}" / "Packages"
    try:
        text = index.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Package:")}


def build_repository(debs: list[Deb], repo: Path, key_home: Path, fpr: str) -> bool:
    """A flat pool and one signed suite: dists/bookworm/{Release,InRelease,Release.gpg}. The same
    packages and key keep the repository as it is (Release carries a date: rebuilding would change it);
    returns whether it was built."""
    stamp = repo.with_name(repo.name + ".stamp")
    wanted = hashlib.sha256("\n".join([fpr, *sorted(d.file_name for d in debs)]).encode()).hexdigest()
    if (repo / "dists").is_dir() and stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        return False
    if repo.exists():
        shutil.rmtree(repo)
    pool = repo / "pool" / COMPONENT
    pool.mkdir(parents=True)
    for deb in debs:
        dest = pool / deb.file_name
        try:
            os.link(deb.path, dest)
        except OSError:
            shutil.copy2(deb.path, dest)
    binary = repo / "dists" / SUITE / COMPONENT / f"binary-{ARCH}"
    binary.mkdir(parents=True)
    packages = _ftparchive(["packages", f"pool/{COMPONENT}"], repo)
    (binary / "Packages").write_text(packages, encoding="utf-8")
    with gzip.GzipFile(binary / "Packages.gz", "wb", mtime=0) as gz:
        gz.write(packages.encode())
    release = _ftparchive(
        [
            "-o", "APT::FTPArchive::Release::Origin=aicc",
            "-o", "APT::FTPArchive::Release::Label=aicc offline bundle",
            "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
            "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
            "-o", f"APT::FTPArchive::Release::Architectures={ARCH}",
            "-o", f"APT::FTPArchive::Release::Components={COMPONENT}",
            "release", f"dists/{SUITE}",
        ],
        repo,
    )  # fmt: skip
    suite = repo / "dists" / SUITE
    (suite / "Release").write_text(release, encoding="utf-8")
    gnupg.sign(key_home, fpr, suite / "Release", suite / "Release.gpg")
    gnupg.sign(key_home, fpr, suite / "Release", suite / "InRelease", clear=True)
    (repo / PUBLIC_KEY).write_bytes(gnupg.export_public(key_home, fpr))
    stamp.write_text(wanted, encoding="utf-8")
    return True


def _ftparchive(args: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run(["apt-ftparchive", *args], capture_output=True, text=True, cwd=cwd, check=False)
    except FileNotFoundError:
        raise InputError("apt-ftparchive is not installed", fix="apt-get install apt-utils") from None
    if proc.returncode != 0:
        raise RunFailed(f"apt-ftparchive failed: {proc.stderr.strip()[-300:]}", where=str(cwd))
    return proc.stdout
