"""Site settings: defaults are valid, bad values name the file and field, env overrides, comments."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from aicc.installer.errors import InputError
from aicc.installer.settings import (
    SiteSettings,
    load_settings,
    render_commented_yaml,
    settings_to_ansible_vars,
)
from tests.unit.hostile_files import HOSTILE, Hostile
from tests.unit.hostile_files import write as write_bytes


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "aicc.yml"
    p.write_text(text, encoding="utf-8")
    return p


def test_rendered_file_round_trips_and_documents_every_field(tmp_path: Path) -> None:
    settings = SiteSettings(profile="ha", timezone="UTC")
    text = render_commented_yaml(settings)
    assert load_settings(write(tmp_path, text)) == settings
    # Every field of every section carries its description as a comment.
    assert "# SIP over TLS (certificate from the site CA)." in text
    assert "# First UDP port for RTP/RTCP." in text


def test_wrong_type_names_file_field_expected_and_found(tmp_path: Path) -> None:
    p = write(tmp_path, "sip:\n  udp_port: fifty\n")
    with pytest.raises(InputError) as err:
        load_settings(p)
    text = str(err.value)
    assert str(p) in text
    assert "sip.udp_port" in text
    assert "'fifty'" in text


def test_typo_in_a_setting_suggests_the_right_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown setting 'sip.udp_prot'.*did you mean 'sip.udp_port'"):
        load_settings(write(tmp_path, "sip:\n  udp_prot: 5070\n"))


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "sip:\n  udp_port: 5060\n bad: [\n")
    with pytest.raises(InputError, match=rf"{p}:\d+: not valid YAML"):
        load_settings(p)


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_settings(tmp_path / "nope.yml")
    assert "aicc init" in (err.value.fix or "")


def test_environment_overrides_the_file_and_is_named_when_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write(tmp_path, "sip:\n  udp_port: 5060\n")
    monkeypatch.setenv("AICC_SIP__UDP_PORT", "5070")
    assert load_settings(p).sip.udp_port == 5070
    monkeypatch.setenv("AICC_SIP__UDP_PORT", "99999")
    with pytest.raises(InputError, match=r"AICC_SIP__UDP_PORT"):
        load_settings(p)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("timezone: Mars/Olympus\n", "unknown time zone"),
        ("media:\n  port_min: 30000\n  port_max: 30010\n", "at least 100 above"),
        ("sip:\n  service_numbers:\n    '40a0': voicebot\n", "must be digits"),
        ("profile: huge\n", "profile"),
        ("app:\n  api_metrics_port: 9163\n", "app ports must all differ"),
        ("app:\n  session_ttl_s: 600\n  session_idle_s: 900\n", "must not exceed session_ttl_s"),
    ],
)
def test_semantic_errors_are_explained(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load_settings(write(tmp_path, text))


def test_ansible_vars_follow_the_settings() -> None:
    settings = SiteSettings.model_validate(
        {"sip": {"udp_port": 5070}, "media": {"port_min": 40000, "port_max": 41000}}
    )
    v = settings_to_ansible_vars(settings)
    assert v["kamailio_udp_port"] == 5070
    assert (v["rtpengine_port_min"], v["rtpengine_port_max"]) == (40000, 41000)
    yaml.safe_dump(v)  # plain data, serialisable as an extra-vars file


def test_app_settings_reach_the_appliance_role() -> None:
    settings = SiteSettings.model_validate(
        {
            "app": {"https_port": 8443, "api_port": 8011, "session_idle_s": 600, "lockout_s": 60},
            "database": {"port": 5433, "name": "cc"},
        }
    )
    v = settings_to_ansible_vars(settings)
    assert (v["appliance_https_port"], v["appliance_api_port"]) == (8443, 8011)
    assert (v["appliance_api_metrics_port"], v["appliance_acd_metrics_port"]) == (9162, 9163)
    assert (v["appliance_session_ttl_s"], v["appliance_session_idle_s"]) == (43200, 600)
    assert (v["appliance_login_max_failures"], v["appliance_lockout_s"]) == (5, 60)
    assert (v["appliance_db_port"], v["appliance_db_name"]) == (5433, "cc")
    role = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "roles/appliance/defaults/main.yml").read_text()
    )
    assert not [k for k in v if k.startswith("appliance_") and k not in role], (
        "a variable the role does not have"
    )


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_settings_file_that_is_not_utf8_text_is_an_input_error(tmp_path: Path, case: Hostile) -> None:
    path = write_bytes(tmp_path, case, "aicc.yml")
    with pytest.raises(InputError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}:{case.line}: settings file is ")
    assert case.says in err.value.message and err.value.fix


def test_settings_edge_files(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == SiteSettings()
    with pytest.raises(InputError, match="settings file is a folder, not a file"):
        load_settings(tmp_path)
    (tmp_path / "zh.yml").write_bytes(codecs.BOM_UTF8 + "# 北京站点\nsite_name: bj  # 站点名\n".encode())
    assert load_settings(tmp_path / "zh.yml").site_name == "bj"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("ntp_servers: [10.0.8.1, ntp.corp.example, fd00::123, ntp1]\n", "ntp_servers"),
        ("packages:\n  source: proxy\n  url: http://10.231.0.1:3142\n", "packages.url"),
        ("packages:\n  source: mirror\n  url: https://mirror.corp.example/debian\n", "packages.url"),
        ("packages:\n  source: proxy\n  url: 'http://[fd00::1]:3142/'\n", "packages.url"),
        ("packages:\n  url: ''\n", "packages.url"),
        ("sip:\n  domain: cc.example.cn\n", "sip.domain"),
        ("sip:\n  domain: 10.0.0.5\n", "sip.domain"),
    ],
)
def test_valid_hosts_in_settings(tmp_path: Path, text: str, field: str) -> None:
    load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "field", "why"),
    [
        ("ntp_servers: [10.0.8.1, 300.1.1.1]\n", "ntp_servers.1", "octet 300 > 255"),
        ("ntp_servers: [ntp_1.corp]\n", "ntp_servers.0", "'_' is not allowed"),
        ("ntp_servers: ['10.0.0']\n", "ntp_servers.0", "3 numbers, an IPv4 address has 4"),
        ("ntp_servers: ['fe80::1%eth0']\n", "ntp_servers.0", "zone index"),
        ("ntp_servers: ['']\n", "ntp_servers.0", "empty address"),
        ("packages:\n  url: http://300.1.1.1:3142\n", "packages.url", "octet 300 > 255"),
        ("packages:\n  url: http://-proxy.corp:3142\n", "packages.url", "starts or ends with '-'"),
        ("packages:\n  url: ftp://10.0.0.1/debian\n", "packages.url", "not an http:// or https:// URL"),
        ("packages:\n  url: 10.0.0.1:3142\n", "packages.url", "not an http:// or https:// URL"),
        ("packages:\n  url: http://10.0.0.1:99999\n", "packages.url", "not a valid URL"),
        ("sip:\n  domain: aicc..local\n", "sip.domain", "an empty label"),
        ("sip:\n  domain: 1.2.3.4.5\n", "sip.domain", "5 numbers"),
    ],
)
def test_invalid_hosts_in_settings_name_the_field_and_say_why(
    tmp_path: Path, text: str, field: str, why: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_settings(p)
    assert str(p) in str(err.value) and f"setting {field!r}" in str(err.value) and why in str(err.value)


def test_hosts_from_the_environment_are_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICC_NTP_SERVERS", '["10.0.8.1", "10.0.8.300"]')
    with pytest.raises(InputError, match=r"ntp_servers.1' \(from \$AICC_NTP_SERVERS.*octet 300 > 255"):
        load_settings(write(tmp_path, ""))


# --- messaging channels -----------------------------------------------------------------------------


def test_channels_are_off_and_shown_commented_out_in_a_new_aicc_yml(tmp_path: Path) -> None:
    text = render_commented_yaml(SiteSettings())
    assert "\nchannels:" not in text and "\n#channels:\n#  # WeCom customer service" in text
    assert "#    corp_id: ''" in text and "#    app_id: ''" in text
    # The customer's edit the comment describes: the first '#' of the block's lines removed, enabled.
    block = text[text.index("#channels:") : text.index("\n\n\n", text.index("#channels:"))]
    opened = "\n".join(line[1:] if line.startswith("#") else line for line in block.splitlines())
    opened = opened.replace("corp_id: ''", "corp_id: ww0123456789abcdef").replace(
        "enabled: false", "enabled: true", 1
    )
    settings = load_settings(write(tmp_path, opened + "\n"))
    assert settings.channels.wecom.enabled and not settings.channels.wechat_oa.enabled
    assert [name for name, _ in settings.channels.enabled()] == ["wecom"]
    # A site that turned a channel on gets it written out, not commented.
    assert "\nchannels:\n" in render_commented_yaml(settings)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "channels:\n  wecom:\n    enabled: true\n",
            r"'channels\.wecom\.corp_id': needed when the channel is enabled",
        ),
        ("channels:\n  wecom:\n    corp_id: 'ww 1'\n", r"'channels\.wecom\.corp_id': a corp id is 1-64 of"),
        (
            "channels:\n  wecom:\n    api_base_url: http://10.0.0.9:8080\n",
            r"'channels\.wecom\.api_base_url': an https:// URL is needed",
        ),
        (
            "channels:\n  wechat_oa:\n    enabled: true\n",
            r"'channels\.wechat_oa\.app_id': needed when the channel",
        ),
        (
            "channels:\n  wechat_oa:\n    app_id: ww0123456789abcdef\n",
            r"'channels\.wechat_oa\.app_id': an AppID is wx followed by 16",
        ),
        ("channels:\n  wechat_oa:\n    api_base_url: https://\n", r"'channels\.wechat_oa\.api_base_url'"),
        (
            "channels:\n  wecom:\n    corpid: ww1\n",
            r"unknown setting 'channels\.wecom\.corpid'.*'channels\.wecom\.corp_id'",
        ),
        ("channels:\n  wechat:\n    enabled: true\n", r"unknown setting 'channels\.wechat'"),
    ],
)
def test_channel_settings_errors_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load_settings(write(tmp_path, text))


def test_channel_settings_reach_the_appliance_role() -> None:
    v = settings_to_ansible_vars(SiteSettings())
    assert (v["appliance_wecom_enabled"], v["appliance_wechat_oa_enabled"]) == (False, False)
    settings = SiteSettings.model_validate(
        {
            "channels": {
                "wecom": {"enabled": True, "corp_id": "ww0123456789abcdef"},
                "wechat_oa": {
                    "enabled": True,
                    "app_id": "wx0123456789abcdef",
                    "api_base_url": "https://10.0.0.9",
                },
            }
        }
    )
    v = settings_to_ansible_vars(settings)
    assert (v["appliance_wecom_enabled"], v["appliance_wecom_corp_id"]) == (True, "ww0123456789abcdef")
    assert v["appliance_wecom_api_base_url"] == "https://qyapi.weixin.qq.com"
    assert (v["appliance_wechat_oa_app_id"], v["appliance_wechat_oa_api_base_url"]) == (
        "wx0123456789abcdef",
        "https://10.0.0.9",
    )
    assert not [k for k in v if "secret" in k or "token" in k]  # secrets come from secrets.yml only


def test_bot_places_are_a_voicebot_setting_within_its_calls() -> None:
    settings = SiteSettings.model_validate({"voicebot": {"max_calls": 20, "max_bot_calls": 4}})
    assert settings_to_ansible_vars(settings)["voicebot_max_bot_calls"] == 4
    assert settings_to_ansible_vars(SiteSettings())["voicebot_max_bot_calls"] is None
    with pytest.raises(ValidationError, match=r"max_bot_calls \(30\) cannot be above max_calls \(20\)"):
        SiteSettings.model_validate({"voicebot": {"max_calls": 20, "max_bot_calls": 30}})
