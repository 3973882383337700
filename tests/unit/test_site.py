"""`aicc init`: a complete site, secrets private and unique, nothing overwritten by accident."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from aicc.installer.errors import InputError
from aicc.installer.site import SECRET_NAMES, Site, init_site, load_secrets
from tests.unit.hostile_files import HOSTILE, Hostile, write


def test_init_writes_a_complete_site(tmp_path: Path) -> None:
    site = init_site(tmp_path / "s", profile="single")
    assert site.settings().profile == "single"
    assert stat.S_IMODE(site.secrets_path.stat().st_mode) == 0o600
    secrets = site.secrets()
    assert set(SECRET_NAMES) <= set(secrets)
    assert all(len(v) >= 32 for v in secrets.values())


def test_every_site_gets_its_own_secrets(tmp_path: Path) -> None:
    a = init_site(tmp_path / "a", profile="single").secrets()
    b = init_site(tmp_path / "b", profile="ha").secrets()
    assert not set(a.values()) & set(b.values())
    assert len(set(a.values())) == len(a)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    before = site.secrets_path.read_text()
    with pytest.raises(InputError, match="site already exists"):
        init_site(tmp_path, profile="single")
    assert site.secrets_path.read_text() == before
    init_site(tmp_path, profile="single", force=True)
    assert site.secrets_path.read_text() != before


def test_secrets_readable_by_others_are_refused(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    site.secrets_path.chmod(0o644)
    with pytest.raises(InputError, match="readable by others") as err:
        load_secrets(site.secrets_path)
    assert err.value.fix == f"chmod 600 {site.secrets_path}"


def test_missing_secret_is_named(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    data = yaml.safe_load(site.secrets_path.read_text())
    del data["postgresql_app_password"]
    site.secrets_path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="postgresql_app_password"):
        Site(tmp_path).secrets()


def test_no_secret_value_in_settings_or_inventory(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="ha")
    public = site.settings_path.read_text() + site.inventory_path.read_text()
    assert not [v for v in site.secrets().values() if v in public]


def test_no_admin_password_is_generated_but_the_api_key_is(tmp_path: Path) -> None:
    """The first admin is made with `aicc admin create`: no admin password sits in secrets.yml."""
    secrets = init_site(tmp_path, profile="single").secrets()
    assert not [name for name in secrets if "admin" in name]
    assert len(secrets["api_secret_key"]) >= 32


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_secrets_file_that_is_not_utf8_text_is_an_input_error(tmp_path: Path, case: Hostile) -> None:
    path = write(tmp_path, case, "secrets.yml")
    path.chmod(0o600)
    with pytest.raises(InputError) as err:
        load_secrets(path)
    assert str(err.value).startswith(f"{path}:{case.line}: secrets file is ") and case.says in str(err.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "secrets missing"), ("just a line\n", "expected a mapping"), ("a: [\n", "not valid YAML")],
)
def test_secrets_file_that_is_no_mapping(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "secrets.yml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(InputError, match=says):
        load_secrets(path)
