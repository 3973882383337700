"""`aicc init`: a complete site, secrets private and unique, nothing overwritten by accident."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from aicc.installer.errors import InputError
from aicc.installer.settings import SiteSettings
from aicc.installer.site import (
    CHANNEL_SECRET_NAMES,
    SECRET_NAMES,
    Site,
    channel_secret_problems,
    init_site,
    load_secrets,
    require_channel_secrets,
)
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


# --- the messaging channels' secrets (copied in by the customer, never generated) ----------------------

CHANNELS = SiteSettings.model_validate(
    {
        "channels": {
            "wecom": {"enabled": True, "corp_id": "ww0123456789abcdef"},
            "wechat_oa": {"enabled": True, "app_id": "wx0123456789abcdef"},
        }
    }
)
WECOM_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_channel_secrets_are_never_generated(tmp_path: Path) -> None:
    secrets = init_site(tmp_path, profile="single").secrets()
    assert not set(secrets) & CHANNEL_SECRET_NAMES
    assert channel_secret_problems(SiteSettings(), secrets) == []  # channels off: nothing needed


def test_an_enabled_channel_without_its_secrets_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    with site.secrets_path.open("a", encoding="utf-8") as fh:
        fh.write(
            f'wecom_secret: "kf-secret-1"\nwecom_token: "0123"\nwecom_encoding_aes_key: "{WECOM_KEY[:-1]}"\n'
        )
    secrets = site.secrets()
    assert secrets["wecom_token"] == "0123"  # quoted: kept as written
    problems = channel_secret_problems(CHANNELS, secrets)
    assert problems[0].startswith("wecom_encoding_aes_key is not an EncodingAESKey: it has 42 characters")
    assert [p.split(" ")[0] for p in problems[1:]] == [
        "wechat_oa_app_secret",
        "wechat_oa_token",
        "wechat_oa_encoding_aes_key",
    ]
    with pytest.raises(InputError) as err:
        require_channel_secrets(CHANNELS, secrets, site.secrets_path)
    assert str(site.secrets_path) in str(err.value) and "wechat_oa_token is missing" in str(err.value)
    assert "secrets.yml" in (err.value.fix or "")
    assert "kf-secret-1" not in str(err.value) and WECOM_KEY[:-1] not in str(err.value)
    wecom_only = CHANNELS.model_copy(
        update={
            "channels": CHANNELS.channels.model_copy(update={"wechat_oa": SiteSettings().channels.wechat_oa})
        }
    )
    secrets["wecom_encoding_aes_key"] = WECOM_KEY
    require_channel_secrets(wecom_only, secrets, site.secrets_path)


def test_a_channel_secret_yaml_reads_as_a_number_must_be_quoted(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    with site.secrets_path.open("a", encoding="utf-8") as fh:
        fh.write("wecom_token: 0123\n")  # YAML 1.1 reads this as octal 83
    with pytest.raises(InputError, match="wecom_token must be text") as err:
        site.secrets()
    assert "quote" in (err.value.fix or "")


def test_install_stops_before_any_host_when_a_channel_lacks_its_secrets(tmp_path: Path) -> None:
    from aicc.installer.inventory import load_inventory
    from aicc.installer.playbook import run_playbook
    from aicc.installer.site import PROFILE_INVENTORIES

    site = init_site(
        tmp_path,
        profile="single",
        inventory_text=PROFILE_INVENTORIES["single"].replace("192.0.2.10", "10.0.0.10"),
        overrides={
            "packages": {"source": "mirror", "url": "http://10.0.0.5/debian"},
            "channels": {"wecom": {"enabled": True, "corp_id": "ww0123456789abcdef"}},
        },
    )
    with pytest.raises(InputError, match="wecom_secret is missing") as err:
        run_playbook(site, load_inventory(site.inventory_path))
    assert err.value.where == str(site.secrets_path)
    assert not (tmp_path / ".runner").exists()  # nothing ran
