"""Site settings: defaults are valid, bad values name the file and field, env overrides, comments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aicc.installer.errors import InputError
from aicc.installer.settings import (
    SiteSettings,
    load_settings,
    render_commented_yaml,
    settings_to_ansible_vars,
)


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
