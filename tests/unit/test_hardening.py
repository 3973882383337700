"""The hardening catalog, evidence judging, per-clause folding, waivers, the report's totals, and the
signed report folder (real GnuPG, real files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aicc.hardening import evidence as ev
from aicc.hardening.catalog import CatalogError, catalog_markdown, default_catalog, load_catalog
from aicc.hardening.evidence import Collected, Evidence, HostObservations
from aicc.hardening.render import content_sha256, render_html, write_data
from aicc.hardening.report import build_report
from aicc.hardening.signing import sign_folder, verify_folder
from aicc.hardening.waivers import Waiver, load_waivers
from aicc.installer import remote
from aicc.installer.cli import app
from aicc.installer.harden import _input_error
from aicc.installer.inventory import Host
from aicc.installer.settings import SiteSettings
from tests.unit.hostile_files import HOSTILE, Hostile
from tests.unit.hostile_files import write as write_hostile

ROOT = Path(__file__).resolve().parents[2]
HARDENING = ROOT / "hardening"
TODAY = date(2026, 12, 4)


# --- catalog ---------------------------------------------------------------------------------------


def test_catalog_loads_and_every_host_evidenced_unit_is_covered_or_listed_manual() -> None:
    cat = default_catalog()
    assert len(cat.controls) >= 30
    assert len(cat.clauses) == 74  # CNS1 8 + ABS1 20 + CES1 34 + SMC1 12
    ids = [c.id for c in cat.controls]
    assert len(set(ids)) == len(ids)
    # the layer the report puts a unit in comes from its id
    assert {c.layer for c in cat.clauses} == {"CNS", "ABS", "CES", "SMC"}


def test_controls_doc_is_current() -> None:
    assert (HARDENING / "CONTROLS.md").read_text(encoding="utf-8") == catalog_markdown(default_catalog()), (
        "regenerate: python -m aicc.hardening.catalog > hardening/CONTROLS.md"
    )


def test_every_check_is_valid_shell_after_placeholders() -> None:
    host = Host(
        name="h1", address="10.0.0.5", groups=["media", "voicebot", "app", "db", "sip_proxy", "monitoring"]
    )
    values = ev.placeholders(host, SiteSettings())
    for c in default_catalog().controls:
        command = ev.render_command(c.check.command, values)
        assert not _placeholders_left(command), c.id
        proc = subprocess.run(["sh", "-n"], input=command, text=True, capture_output=True, check=False)
        assert proc.returncode == 0, f"{c.id}: {proc.stderr}"


def _placeholders_left(command: str) -> str:
    import re

    return " ".join(re.findall(r"@[A-Z_]+@", command))


def test_every_applied_control_names_a_tag_and_tasks_file_of_the_hardening_role() -> None:
    role = ROOT / "roles" / "hardening"
    main = (role / "tasks" / "main.yml").read_text(encoding="utf-8")
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text(encoding="utf-8"))
    for c in default_catalog().controls:
        if c.apply:
            assert (role / "tasks" / c.apply.tasks).is_file(), c.id
            assert c.apply.tag in main, f"{c.id}: tag {c.apply.tag} not in roles/hardening/tasks/main.yml"
            assert c.apply.toggle in defaults, f"{c.id}: toggle {c.apply.toggle} is not a role default"


GOOD = (HARDENING / "controls" / "AICC-SSH-02.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("check"), "check"),
        (lambda d: d["clauses"][0].update(coverage="most"), "clauses.0.coverage"),
        (lambda d: d["clauses"][0].update(unit="L3-CES1-99"), "clauses.0.unit"),
        (lambda d: d.update(hosts=["pbx"]), "hosts"),
        (lambda d: d.update(id="AICC-SSH-09"), "id"),
        (lambda d: d["title"].pop("zh"), "title.zh"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_a_bad_control_file_names_file_and_field(tmp_path: Path, edit: object, field: str) -> None:
    root = _catalog_copy(tmp_path)
    data = yaml.safe_load(GOOD)
    edit(data)  # type: ignore[operator]
    path = root / "controls" / "AICC-SSH-02.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogError) as err:
        load_catalog(root)
    assert err.value.path == path
    assert err.value.field.startswith(field), err.value


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    root = _catalog_copy(tmp_path)
    path = root / "controls" / "AICC-SSH-02.yml"
    path.write_text(GOOD.replace("hosts: [all]", "hosts: [all\nx: : y"), encoding="utf-8")
    with pytest.raises(CatalogError) as err:
        load_catalog(root)
    assert err.value.path == path and err.value.field.startswith("line ")


def _catalog_copy(tmp_path: Path) -> Path:
    root = tmp_path / "cat"
    (root / "controls").mkdir(parents=True)
    shutil.copy(HARDENING / "clauses.yml", root / "clauses.yml")
    for f in (HARDENING / "controls").glob("AICC-SSH-0*.yml"):
        shutil.copy(f, root / "controls" / f.name)
    return root


# --- judging a check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "output", "timed_out", "status"),
    [
        (0, "PasswordAuthentication no", False, "pass"),
        (0, "   \n", False, "error"),  # a pass without evidence is a defect
        (1, "found yes", False, "fail"),
        (3, "container", False, "na"),
        (2, "syntax error", False, "error"),
        (127, "sshd: not found", False, "error"),
        (-1, "", True, "error"),
    ],
)
def test_judge(code: int, output: str, timed_out: bool, status: str) -> None:
    assert ev.judge(code, output, timed_out) == status


def test_long_output_is_trimmed_keeping_head_and_tail() -> None:
    text = "\n".join(f"line {i}" for i in range(500))
    out = ev.trim(text)
    assert out.startswith("line 0") and out.endswith("line 499") and "lines left out" in out


def test_placeholders_expect_the_listeners_of_the_host_groups() -> None:
    s = SiteSettings()
    values = ev.placeholders(Host(name="m", address="10.0.0.7", groups=["media"]), s)
    assert values["EXPECTED_UDP"] == str(s.media.control_port)
    assert values["EXPECTED_UDP_RANGES"] == f"{s.media.port_min}-{s.media.port_max}"
    assert set(values["EXPECTED_TCP"].split()) == {"22", str(s.media.metrics_port), "9100"}


def test_probe_runs_checks_and_reports_exit_codes_output_and_timeouts() -> None:
    if not Path("/bin/sh").exists() or __import__("os").geteuid() != 0:
        pytest.fail("the probe runs as root (as on a host); run the unit tests as root like CI does")
    probe = (HARDENING / "probe.py").read_text(encoding="utf-8")
    checks = [
        {"id": "A", "command": "echo seen; exit 0", "timeout": 5},
        {"id": "B", "command": "echo bad >&2; exit 1", "timeout": 5},
        {"id": "C", "command": "sleep 5", "timeout": 1},
    ]
    script = probe + "\nmain(" + repr(json.dumps(checks)) + ")\n"
    proc = subprocess.run(["/usr/bin/python3", "-"], input=script, text=True, capture_output=True, check=True)
    rows = {r["id"]: r for r in json.loads(proc.stdout)}
    assert rows["A"]["exit"] == 0 and rows["A"]["output"] == "seen\n"
    assert rows["B"]["exit"] == 1 and rows["B"]["output"] == "bad\n"  # stderr is evidence too
    assert rows["C"]["timed_out"] is True


def test_run_host_scrubs_secrets_and_reports_a_probe_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-Passw0rd-value"
    cat = default_catalog()
    host = Host(name="lab1", address="10.0.0.5", groups=["sip_proxy"])
    rows = [
        {"id": c.id, "output": f"password={secret}\n", "exit": 0, "timed_out": False, "timeout": 20,
         "at": "2026-12-04T00:00:00+00:00", "seconds": 0.01}
        for c in cat.controls if c.applies_to(host.groups)
    ]  # fmt: skip
    monkeypatch.setattr(remote, "run", lambda *a, **k: remote.Result("lab1", 0, json.dumps(rows), ""))
    from aicc.installer.playbook import scrubber

    found, _, error = ev.run_host(host, cat, SiteSettings(), scrubber({"db": secret}))
    assert not error and found
    assert all(secret not in e.output for e in found)
    monkeypatch.setattr(remote, "run", lambda *a, **k: remote.Result("lab1", 0, '{"error": "root"}', ""))
    assert ev.run_host(host, cat, SiteSettings(), lambda s: s)[2].startswith("the evidence probe failed")


# --- folding per clause, waivers, totals ------------------------------------------------------------------


def _ev(control: str, host: str, status: str) -> Evidence:
    return Evidence(
        host=host, control=control, status=status, command="true", output=f"{control} {status}",  # type: ignore[arg-type]
        exit_code=0, collected_at="2026-12-04T00:00:00+00:00", seconds=0.1,
    )  # fmt: skip


def _report(evidence: list[Evidence], waivers: list[Waiver] | None = None) -> object:
    hosts = sorted({e.host for e in evidence})
    collected = Collected(
        evidence=evidence,
        observations=[
            HostObservations(
                host=h, packages=["bash 5.2"], wheels=[], egress_dropped_packets=0, egress_rules=[]
            )
            for h in hosts
        ],
        unreachable={},
        seconds=1.0,
        started_at="2026-12-04T00:00:00+00:00",
    )
    return build_report(
        site="t", version="0.1.0", catalog=default_catalog(), hosts={h: ["app"] for h in hosts},
        collected=collected, waivers=waivers or [], today=TODAY,
    )  # fmt: skip


def _clause(report: object, unit: str) -> str:
    return next(c.status for c in report.clauses if c.unit == unit)  # type: ignore[attr-defined]


def test_a_partial_control_alone_never_makes_a_unit_pass() -> None:
    # L3-CES1-01 is served only partly (pwquality, ageing, uniqueness...): all passing gives 部分符合.
    cat = default_catalog()
    covering = [c.id for c, _ in cat.covering("L3-CES1-01")]
    assert covering and all(r.coverage == "partial" for _, r in cat.covering("L3-CES1-01"))
    rep = _report([_ev(c, h, "pass") for c in covering for h in ("a", "b")])
    assert _clause(rep, "L3-CES1-01") == "partial"


def test_unit_results_pass_partial_fail_and_na() -> None:
    full = [c.id for c, r in default_catalog().covering("L3-ABS1-05") if r.coverage == "full"]
    assert full == ["AICC-NET-01"]
    assert (
        _clause(_report([_ev("AICC-NET-01", "a", "pass"), _ev("AICC-NET-01", "b", "pass")]), "L3-ABS1-05")
        == "pass"
    )
    assert (
        _clause(_report([_ev("AICC-NET-01", "a", "pass"), _ev("AICC-NET-01", "b", "fail")]), "L3-ABS1-05")
        == "partial"
    )
    assert (
        _clause(_report([_ev("AICC-NET-01", "a", "fail"), _ev("AICC-NET-01", "b", "error")]), "L3-ABS1-05")
        == "fail"
    )
    assert _clause(_report([_ev("AICC-NET-01", "a", "na")]), "L3-ABS1-05") == "na"
    rep = _report([_ev("AICC-NET-01", "a", "pass")])
    assert _clause(rep, "L3-CNS1-01") == "manual"  # not evidenced by a host
    assert _clause(rep, "L3-CES1-29") == "manual"  # no aicc control: backups are the customer's


def test_waivers_applied_expired_unmatched_and_not_needed() -> None:
    waivers = [
        Waiver(control="AICC-AUD-*", hosts="lab*", reason="containers: no kernel audit",
               approver="Li Wei, CISO", expires=date(2027, 1, 1)),
        Waiver(control="AICC-NET-01", hosts="*", reason="old exception for the firewall", approver="Wang, IT",
               expires=date(2026, 12, 1)),
        Waiver(control="AICC-SSH-01", hosts="nohost", reason="a host that is not there", approver="Zhao",
               expires=date(2027, 1, 1)),
        Waiver(control="AICC-SSH-02", hosts="*", reason="root login accepted for now", approver="Zhao",
               expires=date(2027, 1, 1)),
    ]  # fmt: skip
    rep = _report(
        [
            _ev("AICC-AUD-01", "lab1", "fail"),
            _ev("AICC-NET-01", "lab1", "fail"),
            _ev("AICC-SSH-02", "lab1", "pass"),
        ],
        waivers,
    )
    by = {(r.control, r.host): r for r in rep.results}  # type: ignore[attr-defined]
    assert by[("AICC-AUD-01", "lab1")].status == "waived" and "Li Wei" in by[("AICC-AUD-01", "lab1")].waiver
    assert by[("AICC-NET-01", "lab1")].status == "fail" and "EXPIRED" in by[("AICC-NET-01", "lab1")].waiver
    assert by[("AICC-NET-01", "lab1")].high_risk  # an expired waiver hides nothing
    states = {w.control: w.state for w in rep.waivers}  # type: ignore[attr-defined]
    assert states == {
        "AICC-AUD-*": "applied",
        "AICC-NET-01": "expired",
        "AICC-SSH-01": "unmatched",
        "AICC-SSH-02": "not needed",
    }
    # a waived result never makes its unit 符合
    assert _clause(rep, "L3-CES1-12") in ("fail", "partial")
    assert next(c for c in rep.clauses if c.unit == "L3-CES1-12").waived  # type: ignore[attr-defined]


def test_totals_add_up() -> None:
    import itertools

    statuses = ["pass", "fail", "na", "error"]
    controls = [c.id for c in default_catalog().controls]
    evidence = [
        _ev(c, h, s)
        for (c, h), s in zip(itertools.product(controls, ("a", "b", "c")), itertools.cycle(statuses))
    ]
    rep = _report(evidence)
    assert sum(rep.totals.values()) == len(rep.results) == len(evidence)  # type: ignore[attr-defined]
    for s in rep.totals:  # type: ignore[attr-defined]
        assert sum(h[s] for h in rep.by_host.values()) == rep.totals[s]  # type: ignore[attr-defined]
    assert sum(rep.clause_totals.values()) == len(rep.clauses) == 74  # type: ignore[attr-defined]
    for s in rep.clause_totals:  # type: ignore[attr-defined]
        assert sum(layer[s] for layer in rep.by_layer.values()) == rep.clause_totals[s]  # type: ignore[attr-defined]


def test_waiver_file_errors_name_field(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yml"
    assert load_waivers(path) == []
    path.write_text(
        yaml.safe_dump(
            {"waivers": [{"control": "AICC-SSH-01", "reason": "because we must", "approver": "X Y"}]}
        )
    )
    with pytest.raises(CatalogError) as err:
        load_waivers(path)
    assert err.value.field == "waivers.0.expires"


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_waiver_file_that_is_not_utf8_text_names_file_and_line(tmp_path: Path, case: Hostile) -> None:
    path = write_hostile(tmp_path, case, "waivers.yml")
    with pytest.raises(CatalogError) as err:
        load_waivers(path)
    assert err.value.line == case.line and case.says in err.value.message and err.value.fix
    assert str(err.value).startswith(f"{path}:{case.line}: ")
    converted = _input_error(err.value)
    assert converted.where == f"{path}:{case.line}" and converted.fix == err.value.fix
    with pytest.raises(CatalogError, match="a folder, not a file"):
        load_waivers(tmp_path)


# --- report folder: content hash, html, signature ---------------------------------------------------------


def _folder(tmp_path: Path, name: str, evidence: list[Evidence]) -> Path:
    rep = _report(evidence)
    collected = Collected(evidence=evidence, observations=[], unreachable={}, seconds=1.0,
                          started_at=f"2026-12-04T0{len(name)}:00:00+00:00")  # fmt: skip
    out = tmp_path / name
    write_data(rep, collected, out)  # type: ignore[arg-type]
    (out / "report.html").write_text(
        render_html(rep, default_catalog(), "zh", "2026-12-04"), encoding="utf-8"
    )  # type: ignore[arg-type]
    return out


def test_content_hash_is_stable_and_times_are_kept_apart(tmp_path: Path) -> None:
    evidence = [_ev("AICC-SSH-01", "a", "pass"), _ev("AICC-NET-01", "a", "fail")]
    one, two = _folder(tmp_path, "one", evidence), _folder(tmp_path, "twotwo", evidence)
    assert (one / "times.json").read_bytes() != (two / "times.json").read_bytes()
    assert content_sha256(one) == content_sha256(two)
    changed = _folder(tmp_path, "three", [_ev("AICC-SSH-01", "a", "pass"), _ev("AICC-NET-01", "a", "pass")])
    assert content_sha256(changed) != content_sha256(one)
    html = (one / "report.html").read_text(encoding="utf-8")
    assert "不符合" in html and "L3-ABS1-05" in html and "AICC-NET-01" in html


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str]:
    if not shutil.which("gpg"):
        pytest.fail("gpg is needed (apt-get install gnupg); scripts/bootstrap installs it")
    folder = _folder(tmp_path, "rep", [_ev("AICC-SSH-01", "a", "pass")])
    fpr = sign_folder(folder, tmp_path / "keys", "site1")
    return folder, fpr


def test_signature_verifies_and_any_change_is_named(signed: tuple[Path, str], tmp_path: Path) -> None:
    folder, fpr = signed
    assert (
        subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=folder, check=False).returncode
        == 0
    )
    good = verify_folder(folder, fpr)
    assert good.ok and good.trusted and good.fingerprint == fpr
    assert not verify_folder(folder, "0" * 40).ok  # signed, but not by the site's key

    report = folder / "report.json"
    data = bytearray(report.read_bytes())
    data[10] ^= 0x01  # one byte
    report.write_bytes(bytes(data))
    (folder / "evidence" / "a" / "AICC-SSH-01.txt").unlink()
    (folder / "extra.txt").write_text("x")
    problems = verify_folder(folder, fpr).problems
    assert any(p.startswith("report.json: changed (expected sha256") for p in problems)
    assert "evidence/a/AICC-SSH-01.txt: missing (listed in the manifest)" in problems
    assert "extra.txt: not in the manifest" in problems


def test_a_changed_manifest_breaks_the_signature(signed: tuple[Path, str]) -> None:
    folder, fpr = signed
    manifest = folder / "MANIFEST.sha256"
    manifest.write_text(manifest.read_text().replace("report.json", "report.jsonx"))
    result = verify_folder(folder, fpr)
    assert not result.signature_ok and "does not verify" in result.problems[0]


def test_cli_controls_json_and_verify_exit_codes(signed: tuple[Path, str]) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["harden", "controls", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data["controls"]) == len(default_catalog().controls) and data["catalog_sha256"]
    folder, _ = signed
    res = runner.invoke(app, ["harden", "verify", str(folder), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True
    (folder / "report.html").write_text("tampered")
    res = runner.invoke(app, ["harden", "verify", str(folder), "--json"])
    assert res.exit_code == 1 and any("report.html: changed" in p for p in json.loads(res.stdout)["problems"])


def test_cli_apply_refuses_an_unknown_tag(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "aicc"), "harden", "apply", "-i", str(tmp_path / "inv.ini"),
         "--tags", "hardening_sshd"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "unknown tag 'hardening_sshd'" in res.stderr
