"""The offline bundle: its contents come from the roles, and every kind of damage is refused by name
before anything is used (real GnuPG signatures, real tar archives, a real HTTPS server)."""

from __future__ import annotations

import datetime as dt
import io
import json
import ssl
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aicc.installer import gnupg
from aicc.installer.bundle import archive, serve, site_import
from aicc.installer.bundle.archive import FileEntry, Manifest, check_archive, sha256_file, write_archive
from aicc.installer.bundle.contents import HOST_PREREQUISITES, package_variables, role_packages
from aicc.installer.cli import app
from aicc.installer.errors import InputError
from aicc.installer.playbook import roles_dir

VERSION = "9.9.9"


def test_every_apt_task_installs_a_packages_variable() -> None:
    """The role variables are the one list of what the bundle must carry: a literal package name in a
    task would be installed on a host and be missing from the bundle."""
    offenders = []
    for tasks in roles_dir().glob("*/tasks/*.yml"):
        for task in yaml.safe_load(tasks.read_text(encoding="utf-8")) or []:
            apt = task.get("ansible.builtin.apt") if isinstance(task, dict) else None
            if not isinstance(apt, dict) or "name" not in apt:
                continue
            name = str(apt["name"])
            if not (name.startswith("{{") and "_packages" in name):
                offenders.append(f"{tasks}: {task.get('name')}: {name}")
    assert not offenders


def test_packages_come_from_every_role_and_resolve_their_templates() -> None:
    variables = package_variables(roles_dir())
    assert "hardening_remove_packages" not in variables
    names = role_packages(roles_dir())
    for expected in ("kamailio", "rtpengine-daemon", "nginx-light", "auditd", "sudo", *HOST_PREREQUISITES):
        assert expected in names
    assert any(n.startswith("postgresql-1") for n in names)
    assert not any("{{" in n for n in names)


def test_a_package_list_that_is_not_a_list_is_named(tmp_path: Path) -> None:
    (tmp_path / "r" / "defaults").mkdir(parents=True)
    (tmp_path / "r" / "defaults" / "main.yml").write_text("r_packages: kamailio\n", encoding="utf-8")
    with pytest.raises(ValueError, match="r_packages must be a list"):
        package_variables(tmp_path)


# --- archive ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    found = {}
    for who in ("builder", "stranger"):
        home = tmp_path_factory.mktemp(who)
        found[who] = (home, gnupg.ensure_key(home, f"{who} <{who}@test.invalid>"))
    return found


def _public(keys: dict[str, tuple[Path, str]], who: str) -> bytes:
    home, fpr = keys[who]
    return gnupg.export_public(home, fpr)


def _stage(tmp: Path, keys: dict[str, tuple[Path, str]], signer: str = "builder") -> tuple[Path, Manifest]:
    stage = tmp / "stage"
    files = {
        "apt/pool/main/hello_1.0_amd64.deb": b"!<arch>\n" + bytes(range(256)) * 4,
        "apt/dists/bookworm/Release": b"Origin: aicc\n",
        "wheels/aicc-9.9.9-py3-none-any.whl": b"PK\x03\x04wheel",
        "models/m/weights.bin": b"\x00" * 5000,
        "llama-server/llama-server": b"\x7fELF",
    }
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    manifest = Manifest(
        aicc_version=VERSION,
        built_at="2026-12-04T00:00:00Z",
        suite="bookworm",
        arch="amd64",
        signing_key=keys[signer][1],
        named_packages=["hello"],
        models=["m"],
        files=[
            FileEntry(path=rel, size=len(data), sha256=sha256_file(stage / rel), source="test")
            for rel, data in sorted(files.items())
        ],
    )
    _sign(stage, manifest, keys, signer)
    return stage, manifest


def _sign(stage: Path, manifest: Manifest, keys: dict[str, tuple[Path, str]], signer: str) -> None:
    home, fpr = keys[signer]
    (stage / archive.MANIFEST).write_text(manifest.model_dump_json(), encoding="utf-8")
    gnupg.sign(home, fpr, stage / archive.MANIFEST, stage / archive.SIGNATURE)
    (stage / archive.PUBLIC_KEY).write_bytes(gnupg.export_public(home, fpr))


def _write(tmp: Path, stage: Path, manifest: Manifest) -> Path:
    out = tmp / "bundle.tar"
    write_archive(stage, manifest, out, lambda n: None)
    return out


def _check(path: Path, key: bytes, version: str = VERSION) -> archive.Verdict:
    return check_archive(path, key, version=version)


def test_a_good_bundle_passes_every_check(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    stage, manifest = _stage(tmp_path, keys)
    verdict = _check(_write(tmp_path, stage, manifest), _public(keys, "builder"))
    assert verdict.ok, verdict.problems
    assert verdict.checked == len(manifest.files)
    assert verdict.fingerprint == keys["builder"][1]


def _rewrite(
    src: Path, dest: Path, edit: Callable[[tarfile.TarInfo, bytes], tuple[tarfile.TarInfo, bytes] | None]
) -> Path:
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            reader = tin.extractfile(member)
            data = reader.read() if reader else b""
            result = edit(member, data)
            if result is None:
                continue
            info, body = result
            info.size = len(body)
            tout.addfile(info, io.BytesIO(body))
    return dest


def test_one_byte_changed_in_a_deb_is_named_with_both_hashes(
    tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    stage, manifest = _stage(tmp_path, keys)
    good = _write(tmp_path, stage, manifest)

    def flip(info: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if info.name.endswith(".deb"):
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return info, data

    verdict = _check(_rewrite(good, tmp_path / "bad.tar", flip), _public(keys, "builder"))
    assert not verdict.ok
    [problem] = verdict.problems
    assert problem.startswith("apt/pool/main/hello_1.0_amd64.deb: changed (expected sha256 ")


def test_a_missing_wheel_and_an_unlisted_file_are_named(
    tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    stage, manifest = _stage(tmp_path, keys)
    good = _write(tmp_path, stage, manifest)
    extra = tarfile.TarInfo("wheels/evil-1.0-py3-none-any.whl")

    def drop_and_add(info: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes] | None:
        if info.name.startswith("wheels/aicc"):
            return extra, b"not listed"
        return info, data

    verdict = _check(_rewrite(good, tmp_path / "bad.tar", drop_and_add), _public(keys, "builder"))
    assert sorted(verdict.problems) == [
        "wheels/aicc-9.9.9-py3-none-any.whl: missing (listed in the manifest)",
        "wheels/evil-1.0-py3-none-any.whl: not in the manifest",
    ]


def test_a_truncated_archive_is_refused(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    stage, manifest = _stage(tmp_path, keys)
    good = _write(tmp_path, stage, manifest)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    verdict = _check(cut, _public(keys, "builder"))
    assert not verdict.ok
    assert any("truncated or damaged" in p or "missing" in p for p in verdict.problems)


def test_a_manifest_signed_by_another_key_is_refused(
    tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    stage, manifest = _stage(tmp_path, keys, signer="stranger")
    verdict = _check(_write(tmp_path, stage, manifest), _public(keys, "builder"))
    [problem] = verdict.problems
    assert f"signed by key {keys['stranger'][1]}, which is not the trusted bundle key" in problem
    assert keys["builder"][1] in problem
    assert verdict.manifest is None  # nothing in an untrusted manifest is believed


def test_a_manifest_changed_after_signing_is_refused(
    tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    stage, manifest = _stage(tmp_path, keys)
    good = _write(tmp_path, stage, manifest)

    def forge(info: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if info.name == archive.MANIFEST:
            data = data.replace(b'"models":["m"]', b'"models":["x"]')
        return info, data

    verdict = _check(_rewrite(good, tmp_path / "forged.tar", forge), _public(keys, "builder"))
    assert verdict.problems == [
        f"{archive.SIGNATURE}: bad signature: {archive.MANIFEST} was altered or the signature broken"
    ]


def test_a_bundle_for_another_version_is_refused(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    stage, manifest = _stage(tmp_path, keys)
    verdict = _check(_write(tmp_path, stage, manifest), _public(keys, "builder"), version="1.0.0")
    assert verdict.problems == [
        f"{archive.MANIFEST}: the bundle is for aicc {VERSION}, this is aicc 1.0.0 "
        "(build the bundle with the same aicc version as the installer)"
    ]


def test_a_path_outside_the_bundle_is_refused(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    stage, manifest = _stage(tmp_path, keys)
    good = _write(tmp_path, stage, manifest)

    def escape(info: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if info.name == "llama-server/llama-server":
            info.name = "../../etc/cron.d/evil"
        return info, data

    verdict = check_archive(
        _rewrite(good, tmp_path / "evil.tar", escape),
        _public(keys, "builder"),
        version=VERSION,
        extract_to=tmp_path / "x",
    )
    assert "../../etc/cron.d/evil: not a plain file with a relative path (refused)" in verdict.problems
    assert not (tmp_path / "etc").exists()


def test_an_archive_without_the_manifest_first_is_refused(
    tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="README")
    assert _check(plain, _public(keys, "builder")).problems == [
        f"{archive.MANIFEST}: expected as member 1, found README"
    ]


# --- import ----------------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "bundle").mkdir(parents=True)
    (root / "bundle" / "old.txt").write_text("the bundle in use", encoding="utf-8")
    (root / "aicc.yml").write_text("{}\n", encoding="utf-8")
    return root


def test_import_replaces_the_bundle_and_pins_the_key(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site_import, "aicc_version", lambda: VERSION)
    stage, manifest = _stage(tmp_path, keys)
    key = tmp_path / "builder.asc"
    key.write_bytes(_public(keys, "builder"))
    verdict = site_import.import_bundle(_write(tmp_path, stage, manifest), site, key, lambda n: None)
    assert verdict.ok, verdict.problems
    assert (site / "bundle" / "models" / "m" / "weights.bin").read_bytes() == b"\x00" * 5000
    assert not (site / "bundle" / "old.txt").exists()
    assert (site / site_import.PINNED_KEY).read_bytes() == key.read_bytes()
    kept = json.loads((site / "bundle" / "MANIFEST.json").read_text())  # what installs publish
    assert kept["built_at"] == manifest.built_at and kept["aicc_version"] == VERSION
    # the pinned key is now the default: a stranger's bundle is refused without --key
    stage2, manifest2 = _stage(tmp_path / "2", keys, signer="stranger")
    verdict = site_import.import_bundle(_write(tmp_path / "2", stage2, manifest2), site, None, lambda n: None)
    assert not verdict.ok
    assert (site / "bundle" / "models" / "m" / "weights.bin").is_file()


def test_a_bad_bundle_leaves_the_site_as_it_was(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site_import, "aicc_version", lambda: VERSION)
    stage, manifest = _stage(tmp_path, keys)
    (stage / "models" / "m" / "weights.bin").write_bytes(b"\x01" * 5000)  # differs from the manifest
    key = tmp_path / "builder.asc"
    key.write_bytes(_public(keys, "builder"))
    verdict = site_import.import_bundle(_write(tmp_path, stage, manifest), site, key, lambda n: None)
    assert verdict.problems and verdict.problems[0].startswith("models/m/weights.bin: changed")
    assert (site / "bundle" / "old.txt").read_text(encoding="utf-8") == "the bundle in use"
    assert not (site / ".bundle-import").exists()


def test_import_onto_a_full_disk_is_refused_before_unpacking(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage, manifest = _stage(tmp_path, keys)
    bundle = _write(tmp_path, stage, manifest)
    monkeypatch.setattr(site_import.shutil, "disk_usage", lambda p: type("U", (), {"free": 1024})())
    key = tmp_path / "builder.asc"
    key.write_bytes(_public(keys, "builder"))
    with pytest.raises(InputError, match="not enough disk to import the bundle"):
        site_import.import_bundle(bundle, site, key, lambda n: None)
    assert (site / "bundle" / "old.txt").is_file()


def test_cli_verify_names_each_problem_and_exits_1(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    stage, manifest = _stage(tmp_path, keys)
    (stage / "llama-server" / "llama-server").write_bytes(b"\x7fELF tampered")
    bundle = _write(tmp_path, stage, manifest)
    key = tmp_path / "builder.asc"
    key.write_bytes(_public(keys, "builder"))
    result = CliRunner().invoke(app, ["bundle", "verify", str(bundle), "--key", str(key), "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert any(p.startswith("llama-server/llama-server: changed") for p in data["problems"])
    assert any("this is aicc" in p for p in data["problems"])  # 9.9.9 is not the installed version

    missing = subprocess.run(
        [
            str(Path(sys.executable).parent / "aicc"),
            "bundle",
            "verify",
            str(tmp_path / "nope.tar"),
            "--key",
            str(key),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "bundle not found" in missing.stderr
    assert "Traceback" not in missing.stderr


# --- serving ---------------------------------------------------------------------------------------


def _site_ca(pki: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test site CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    pki.mkdir()
    (pki / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_the_repository_is_served_over_https_checked_against_the_site_ca(tmp_path: Path) -> None:
    repo = tmp_path / "apt"
    (repo / "dists" / "bookworm").mkdir(parents=True)
    (repo / "dists" / "bookworm" / "InRelease").write_text("signed", encoding="utf-8")
    _site_ca(tmp_path / "pki")
    trust = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.crt"))
    with serve.serving(repo, tmp_path / "pki", "127.0.0.1", port=_free_port()) as url:
        assert url.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(url + "dists/bookworm/InRelease", context=trust, timeout=10) as resp:
            assert resp.read() == b"signed"
        with pytest.raises(urllib.error.HTTPError) as listing:
            urllib.request.urlopen(url + "dists/", context=trust, timeout=10)
        assert listing.value.code == 403
        post = urllib.request.Request(url + "dists/bookworm/InRelease", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(post, context=trust, timeout=10)
        assert posted.value.code == 501
        # a client that does not trust the site CA gets no answer
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(
                url + "dists/bookworm/InRelease", context=ssl.create_default_context(), timeout=10
            )


def test_serving_without_an_imported_bundle_names_the_fix(tmp_path: Path) -> None:
    with (
        pytest.raises(InputError, match="no apt repository") as exc,
        serve.serving(tmp_path, tmp_path, "127.0.0.1", 1),
    ):
        pass
    assert exc.value.fix == "aicc bundle import FILE --site DIR"


def test_the_source_address_is_the_route_to_the_host() -> None:
    assert serve.source_address("127.0.0.1") == "127.0.0.1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_install_from_a_bundle_never_imported_is_refused_before_any_host(tmp_path: Path) -> None:

    from aicc.installer.inventory import load_inventory
    from aicc.installer.lab.plan import make_plan
    from aicc.installer.lab.sitefiles import write_site
    from aicc.installer.playbook import run_playbook

    site = write_site(tmp_path / "site", make_plan("dev1", "10.231.1.0/24", 1))
    assert site.settings().packages.source == "bundle"
    with pytest.raises(InputError, match="holds no imported bundle") as exc:
        run_playbook(site, load_inventory(site.inventory_path))
    assert f"aicc bundle import aicc.bundle --site {site.root}" in (exc.value.fix or "")
    assert exc.value.where == str(site.settings_path)


def test_extra_packages_the_bundle_lacks_are_refused_before_any_host(tmp_path: Path) -> None:

    from aicc.installer.lab.plan import make_plan
    from aicc.installer.lab.sitefiles import set_packages, write_site
    from aicc.installer.playbook import check_package_source

    site = write_site(tmp_path / "site", make_plan("dev1", "10.231.1.0/24", 1))
    index = site.root / "bundle" / "apt" / "dists" / "bookworm" / "main" / "binary-amd64"
    index.mkdir(parents=True)
    (index / "Packages").write_text("Package: vendor-agent\nVersion: 1\n\nPackage: jq\nVersion: 1.6\n")
    set_packages(site, extra=["vendor-agent", "grafana", "jq"])
    with pytest.raises(InputError, match="names grafana, which") as exc:
        check_package_source(site)
    assert "--with-deb" in (exc.value.fix or "")


def test_an_extra_package_name_must_be_a_debian_name(tmp_path: Path) -> None:
    from aicc.installer.settings import load_settings

    path = tmp_path / "aicc.yml"
    path.write_text("packages:\n  extra: [vendor-agent, 'Vendor Agent; rm -rf /']\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"packages\.extra") as exc:
        load_settings(path)
    assert "Vendor Agent" in str(exc.value)
