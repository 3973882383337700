"""Grafana dashboards as code: every panel /ops/ draws is in a dashboard with the same PromQL, the
files are what Grafana's provisioning reads (stable uid, the SDK's schemaVersion, one datasource
uid), a broken panel definition names its field, and the monitoring role provisions Grafana only
when the site's package source has it, saying so plainly otherwise."""

from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard as SdkDashboard

from aicc.installer.errors import InputError
from aicc.installer.playbook import render_monitoring_dashboards
from aicc.installer.site import ADDED_LATER, SECRET_NAMES, Site, init_site
from aicc.monitoring import grafana
from aicc.monitoring.panels import DASHBOARDS, Dashboard, Panel, Query, Text
from aicc.monitoring.slo import DefinitionError

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Any]]:
    return {
        d.id: json.loads(text) for d, text in zip(DASHBOARDS, grafana.dashboard_files().values(), strict=True)
    }


def test_every_panel_is_in_its_dashboard_with_the_same_promql(models: dict[str, dict[str, Any]]) -> None:
    assert list(models) == [d.id for d in DASHBOARDS]
    for dashboard in DASHBOARDS:
        got = models[dashboard.id]
        assert got["title"] == dashboard.title.en
        assert [p["title"] for p in got["panels"]] == [p.title.en for p in dashboard.panels]
        for panel, built in zip(dashboard.panels, got["panels"], strict=True):
            assert built["type"] == panel.kind
            assert built["description"] == panel.title.zh
            assert [t["expr"] for t in built["targets"]] == [q.expr for q in panel.queries]
            assert [t["refId"] for t in built["targets"]] == ["A", "B", "C"][: len(panel.queries)]
            # Stat panels read one value now, like /ops/; time series a range.
            assert all(t["instant"] is (panel.kind == "stat") for t in built["targets"])
            assert built["fieldConfig"]["defaults"]["unit"] == grafana.UNITS[panel.unit]


def test_the_issue_s_dashboards_are_all_there(models: dict[str, dict[str, Any]]) -> None:
    assert set(models) == {"overview", "sip_media", "ai_latency", "acd", "hosts", "postgres"}
    overview = {p["title"] for p in models["overview"]["panels"]}
    assert {"Calls now", "Service level today", "SLO error budget left"} <= overview


def test_panel_ids_are_unique_numbers_and_panels_fit_the_grid(models: dict[str, dict[str, Any]]) -> None:
    for uid, model in models.items():
        ids = [p["id"] for p in model["panels"]]
        assert ids == list(range(1, len(ids) + 1)), uid
        cells = set()
        for p in model["panels"]:
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (uid, p["title"])
            cell = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
            assert not cells & cell, f"{uid}: {p['title']} overlaps another panel"
            cells |= cell


def test_files_are_what_grafana_provisioning_reads_and_stable_across_runs(
    models: dict[str, dict[str, Any]],
) -> None:
    first, second = grafana.dashboard_files(), grafana.dashboard_files()
    assert first == second  # the same bytes: a second install changes nothing
    assert list(first) == [f"aicc-{d.id}.json" for d in DASHBOARDS]
    for dashboard in DASHBOARDS:
        model = models[dashboard.id]
        assert model["uid"] == f"aicc-{dashboard.id}" and len(model["uid"]) <= 40
        assert "id" not in model  # Grafana assigns the numeric id; the uid is what stays
        assert model["schemaVersion"] == SdkDashboard().schema_version == 41  # Grafana 11.6
        assert model["tags"] == ["aicc"] and model["editable"] is False
        assert isinstance(model["panels"], list) and model["title"]


def test_every_panel_and_query_names_the_provisioned_datasource(models: dict[str, dict[str, Any]]) -> None:
    want = {"type": "prometheus", "uid": grafana.DATASOURCE_UID}
    for model in models.values():
        for panel in model["panels"]:
            assert panel["datasource"] == want
            assert all(t["datasource"] == want for t in panel["targets"])
    template = (ROLE / "templates" / "grafana-datasources.yaml.j2").read_text()
    assert f"'uid': '{grafana.DATASOURCE_UID}'" in template


@pytest.mark.parametrize(
    ("legend", "want"),
    [
        ("", ""),
        ("{host}", "{{host}}"),
        ("{queue} {state}", "{{queue}} {{state}}"),
        ("calls set up", "calls set up"),
        ("{{literal}} {slo}", "{literal} {{slo}}"),
    ],
)
def test_legends_become_grafana_legend_formats(legend: str, want: str) -> None:
    assert grafana.legend_format(legend) == want


def test_thresholds_turn_red_on_the_bad_side(models: dict[str, dict[str, Any]]) -> None:
    service_level = next(p for p in models["overview"]["panels"] if p["title"] == "Service level today")
    steps = service_level["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 80}]
    t = Text(en="Queue", zh="队列")
    above = Panel(id="p", title=t, kind="stat", threshold=5, queries=[Query(expr="up")])
    panels: Any = grafana.dashboard_model(Dashboard(id="d", title=t, panels=[above]))["panels"]
    assert panels[0]["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
        {"color": "green", "value": None},
        {"color": "red", "value": 5},
    ]


def test_chinese_titles_for_a_chinese_locale() -> None:
    assert grafana.language_of("zh_CN.UTF-8") == "zh" and grafana.language_of("en_US.UTF-8") == "en"
    model = json.loads(grafana.dashboard_files(lang="zh")["aicc-overview.json"])
    assert model["title"] == "总览"
    assert model["panels"][0]["title"] == "当前通话" and model["panels"][0]["description"] == "Calls now"


T = Text(en="t", zh="t")
GOOD = Panel(id="good", title=T, queries=[Query(expr="up")])


@pytest.mark.parametrize(
    ("broken", "field", "words"),
    [
        (Panel(id="p", title=T, queries=[Query(expr="up", legend="{host")]), "queries.0.legend", "{host}"),
        (
            Panel(id="p", title=T, queries=[Query(expr="up"), Query(expr="up", legend="{host!r}")]),
            "queries.1.legend",
            "plain label names",
        ),
        (Panel(id="p", title=T, queries=[Query(expr="  ")]), "queries.0.expr", "empty PromQL"),
        (Panel(id="p", title=T, threshold=float("nan"), queries=[Query(expr="up")]), "threshold", "finite"),
        (
            Panel.model_construct(
                id="p",
                title=T,
                kind="timeseries",
                unit="furlongs",
                queries=[Query(expr="up")],
                threshold=None,
            ),
            "unit",
            "'per_second'",
        ),
        (GOOD, "id", "used twice"),
    ],
)
def test_a_broken_panel_definition_names_its_dashboard_panel_and_field(
    broken: Panel, field: str, words: str
) -> None:
    dashboard = Dashboard.model_construct(id="dash", title=T, panels=[GOOD, broken])
    with pytest.raises(DefinitionError) as err:
        grafana.dashboard_model(dashboard)
    assert err.value.path.name == "panels.py"
    assert err.value.field == f"dashboard dash panel {broken.id} {field}", str(err.value)
    assert words in err.value.message


def test_writing_removes_stale_dashboards_and_leaves_unchanged_files_alone(tmp_path: Path) -> None:
    (tmp_path / "aicc-gone.json").write_text("{}")
    (tmp_path / "someone-elses.json").write_text("{}")
    written = grafana.write_dashboards(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(f"aicc-{d.id}.json" for d in DASHBOARDS), "someone-elses.json"]
    )
    mtimes = {p: p.stat().st_mtime_ns for p in written}
    os.utime(written[0], ns=(1, 1))
    grafana.write_dashboards(tmp_path)
    assert written[0].stat().st_mtime_ns == 1  # same text: not rewritten
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if p != written[0])


def test_the_installer_renders_the_dashboards_into_the_runner_folder(tmp_path: Path) -> None:
    folder = render_monitoring_dashboards(tmp_path, "zh_CN.UTF-8")
    assert folder == tmp_path / "monitoring-dashboards"
    assert json.loads((folder / "aicc-acd.json").read_text())["title"] == "ACD 与队列"


def test_the_installer_turns_a_broken_panel_into_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(folder: Path, lang: str) -> list[Path]:
        raise DefinitionError(Path("panels.py"), "dashboard hosts panel cpu unit", "bad unit")

    monkeypatch.setattr(grafana, "write_dashboards", broken)
    with pytest.raises(InputError) as err:
        render_monitoring_dashboards(tmp_path, "en_US.UTF-8")
    assert err.value.where == "panels.py field dashboard hosts panel cpu unit"


# ---------------------------------------------------------------- the site's Grafana password


def test_grafana_s_password_is_generated_with_the_site(tmp_path: Path) -> None:
    secrets = init_site(tmp_path, profile="single").secrets()
    assert "monitoring_grafana_password" in SECRET_NAMES
    assert len(secrets["monitoring_grafana_password"]) >= 32


def test_a_site_from_before_grafana_gets_its_password_added_once(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    old = "".join(
        line
        for line in site.secrets_path.read_text().splitlines(keepends=True)
        if "monitoring_grafana_password" not in line and "Grafana" not in line
    )
    site.secrets_path.write_text(old)
    before = yaml.safe_load(old)
    first = Site(tmp_path).secrets()
    assert site.secrets_path.read_text().startswith(old)  # nothing else rewritten
    assert stat.S_IMODE(site.secrets_path.stat().st_mode) == 0o600
    assert {k: first[k] for k in before} == before
    assert Site(tmp_path).secrets() == first  # generated once, then kept
    assert set(SECRET_NAMES) >= ADDED_LATER


def test_an_emptied_grafana_password_is_still_refused(tmp_path: Path) -> None:
    site = init_site(tmp_path, profile="single")
    data = yaml.safe_load(site.secrets_path.read_text())
    data["monitoring_grafana_password"] = ""
    site.secrets_path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="monitoring_grafana_password"):
        Site(tmp_path).secrets()


def test_grafana_s_port_is_opened_to_the_site_but_need_not_listen() -> None:
    from aicc.installer.settings import SiteSettings, settings_to_ansible_vars
    from aicc.installer.sizing import firewall_rules, listeners

    s = SiteSettings()
    [port] = [x for x in listeners("monitoring", s) if x.port == s.monitoring.grafana_port]
    assert (port.proto, port.process, port.optional, port.public) == ("tcp", "grafana", True, False)
    inbound: Any = firewall_rules(s)["hardening_inbound"]
    assert {"ports": "3000", "proto": "tcp", "scope": "site", "what": port.what} in inbound["monitoring"]
    assert settings_to_ansible_vars(s)["monitoring_grafana_port"] == 3000


# ---------------------------------------------------------------- the role (Ansible, slow)

INVENTORY = """\
[all:vars]
ansible_connection=local
ansible_python_interpreter={python}
[monitoring]
mon1 ansible_host=10.0.0.81
mon6 ansible_host=fd00::81
"""

TEMPLATES = [
    "grafana.ini.j2",
    "grafana-datasources.yaml.j2",
    "grafana-dashboards.yaml.j2",
    "grafana-service.conf.j2",
]


def ansible(
    tmp: Path, play: list[dict[str, Any]], extra: dict[str, Any], path: str = "", *options: str
) -> str:
    (tmp / "inventory.ini").write_text(INVENTORY.format(python=sys.executable))
    (tmp / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    (tmp / "extra.json").write_text(json.dumps(extra))
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_HOME": str(tmp / ".ansible"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "PATH": f"{path}{os.pathsep if path else ''}{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.ini", "play.yml", "-e", "@extra.json", *options],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("grafana-role")
    out = tmp / "out"
    play = [
        {
            "name": "Render the Grafana templates",
            "hosts": "all",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml")],
            "tasks": [
                {
                    "name": f"Render {name}",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / name),
                        "dest": f"{out}/{{{{ inventory_hostname }}}}-{name.removesuffix('.j2')}",
                        "mode": "0644",
                    },
                }
                for name in TEMPLATES
            ],
        }
    ]
    out.mkdir()
    extra = {
        "monitoring_grafana_port": 3443,
        "monitoring_scrape_interval_s": 30,
        "common_tls_dir": "/etc/x/tls",
    }
    ansible(tmp, play, extra)
    return out


@pytest.mark.slow
def test_grafana_serves_https_on_the_host_address_with_the_site_certificate(rendered: Path) -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string((rendered / "mon1-grafana.ini").read_text())
    server = ini["server"]
    assert (server["protocol"], server["http_addr"], server["http_port"]) == ("https", "10.0.0.81", "3443")
    assert server["root_url"] == "https://10.0.0.81:3443/"
    assert (server["cert_file"], server["cert_key"]) == ("/etc/x/tls/host.crt", "/etc/x/tls/host.key")
    assert ini["security"]["admin_password"] == "$__file{/etc/grafana/aicc-admin-password}"
    assert ini["users"]["allow_sign_up"] == "false" and ini["auth.anonymous"]["enabled"] == "false"
    # An offline site: nothing calls grafana.com.
    assert (
        ini["analytics"]["reporting_enabled"] == "false" and ini["analytics"]["check_for_updates"] == "false"
    )
    assert ini["plugins"]["public_key_retrieval_disabled"] == "true"
    v6 = configparser.ConfigParser(interpolation=None)
    v6.read_string((rendered / "mon6-grafana.ini").read_text())
    assert v6["server"]["http_addr"] == "fd00::81" and v6["server"]["root_url"] == "https://[fd00::81]:3443/"
    dropin = (rendered / "mon1-grafana-service.conf").read_text()
    assert "SupplementaryGroups=ssl-cert" in dropin


@pytest.mark.slow
def test_provisioning_points_at_the_site_prometheus_and_the_dashboards_folder(rendered: Path) -> None:
    sources = yaml.safe_load((rendered / "mon1-grafana-datasources.yaml").read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert source["uid"] == grafana.DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"] == "http://10.0.0.81:9090" and source["jsonData"]["timeInterval"] == "30s"
    assert source["editable"] is False
    v6 = yaml.safe_load((rendered / "mon6-grafana-datasources.yaml").read_text())
    assert v6["datasources"][0]["url"] == "http://[fd00::81]:9090"
    providers = yaml.safe_load((rendered / "mon1-grafana-dashboards.yaml").read_text())["providers"]
    assert providers == [
        {
            "name": "aicc",
            "orgId": 1,
            "folder": "aicc",
            "folderUid": "aicc",
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": "/etc/grafana/dashboards/aicc", "foldersFromFilesStructure": False},
        }
    ]


@pytest.mark.slow
def test_without_a_grafana_package_the_role_says_so_and_carries_on(tmp_path: Path) -> None:
    """The role's own grafana.yml against a package source without grafana (apt-cache answers 100):
    a plain warning naming the fix, nothing installed, no failure. In check mode, so the package
    lists of the machine running the test are not refreshed (the lab runs the real thing)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-cache").write_text("#!/bin/sh\necho 'E: No packages found' >&2\nexit 100\n")
    (fake / "apt-cache").chmod(0o755)
    play = [
        {
            "name": "Grafana tasks on a host whose package source has no grafana",
            "hosts": "mon1",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Run the role's Grafana tasks",
                    "ansible.builtin.include_role": {"name": "monitoring", "tasks_from": "grafana.yml"},
                }
            ],
        }
    ]
    out = ansible(tmp_path, play, {"monitoring_grafana_password": "not-used-here"}, str(fake), "--check")
    assert "WARNING: Grafana is not installed on mon1" in out
    assert "aicc bundle build --with-deb grafana_<version>_amd64.deb" in out
    assert "changed=0" in out and "failed=0" in out
