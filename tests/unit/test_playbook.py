"""The Ansible runner, for real on local-connection hosts: progress counts, failure report, secret
scrubbing in the log, and --resume restarting at the failed play."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

from aicc.installer.inventory import load_inventory
from aicc.installer.playbook import parse_task_listing, run_playbook, scrubber
from aicc.installer.site import init_site
from aicc.installer.sizing import GROUPS

PLAYBOOK = """\
- name: First play
  hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.copy:
        dest: "{{ aicc_site_dir }}/first-{{ inventory_hostname }}"
        content: "ran\\n"
        mode: "0644"
- name: Second play
  hosts: db
  gather_facts: false
  tasks:
    - name: Needs the marker
      ansible.builtin.fail:
        msg: "marker missing; the password was {{ postgresql_app_password }}"
      when: not (aicc_site_dir + '/marker') is file
    - name: After the marker
      ansible.builtin.debug:
        msg: done
"""


@pytest.fixture
def local_site(tmp_path: Path) -> tuple[Path, Path]:
    groups = "".join(f"[{g}]\n{'h1' if g == 'db' else 'h2'}\n" for g in GROUPS)
    inventory = (
        f"[all:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n" + groups
    )
    site = init_site(tmp_path / "site", profile="single", inventory_text=inventory)
    playbook = tmp_path / "pb.yml"
    playbook.write_text(PLAYBOOK)
    return site.root, playbook


def test_task_listing_counts_tasks_per_host() -> None:
    listing = (
        "\nplaybook: pb.yml\n\n  play #1 (all): First play\tTAGS: []\n    pattern: ['all']\n"
        "    hosts (2):\n      h1\n      h2\n    tasks:\n      Say hello\tTAGS: []\n\n"
        "  play #2 (db): Second play\tTAGS: []\n    pattern: ['db']\n    hosts (1):\n      h1\n"
        "    tasks:\n      One\tTAGS: []\n      Two\tTAGS: []\n"
    )
    assert parse_task_listing(listing) == {"h1": 3, "h2": 1}


def test_scrubber_hides_every_secret_value() -> None:
    scrub = scrubber({"a": "s3cr3t-value-1", "b": "another-secret-2"})
    assert scrub("x s3cr3t-value-1 y another-secret-2") == "x ******** y ********"


def test_failure_is_reported_scrubbed_and_resumable(local_site: tuple[Path, Path]) -> None:
    root, playbook = local_site
    from aicc.installer.site import Site

    site = Site(root)
    inv = load_inventory(site.inventory_path)
    secret = site.secrets()["postgresql_app_password"]
    console = Console(record=True, width=120)

    first = run_playbook(site, inv, playbook=playbook, console=console)
    assert not first.ok
    assert [(f.host, f.play, f.task) for f in first.failures] == [("h1", "Second play", "Needs the marker")]
    assert "marker missing" in first.failures[0].message
    assert secret not in first.failures[0].message
    assert first.hosts["h1"].failed == 1 and first.hosts["h2"].failed == 0
    assert first.resume_from == "Second play"
    log = first.log.read_text()
    assert "Needs the marker" in log and secret not in log
    assert "1/1" in console.export_text()  # h2's progress row: task 1 of 1

    (root / "marker").write_text("")
    (root / "first-h1").unlink()
    resumed = run_playbook(site, inv, playbook=playbook, resume=True, console=console)
    assert resumed.ok, resumed.failures
    assert not (root / "first-h1").exists(), "--resume re-ran the play that had succeeded"
    assert "After the marker" in resumed.log.read_text()

    again = run_playbook(site, inv, playbook=playbook, console=console)
    assert again.ok
    assert again.hosts["h1"].changed == 1  # first-h1 was removed above, so exactly that task changed
    assert run_playbook(site, inv, playbook=playbook, console=console).hosts["h1"].changed == 0


def test_resume_without_a_failed_run_is_an_input_error(local_site: tuple[Path, Path]) -> None:
    from aicc.installer.errors import InputError
    from aicc.installer.site import Site

    root, playbook = local_site
    site = Site(root)
    with pytest.raises(InputError, match="nothing to resume"):
        run_playbook(site, load_inventory(site.inventory_path), playbook=playbook, resume=True)


def test_relative_inventory_path_reaches_the_hosts(
    local_site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `aicc install -i site/inventory.ini` from the site's parent: the runner works in its own folder,
    # so a relative path once made Ansible take the path for a host name.
    from aicc.installer.site import Site

    root, playbook = local_site
    monkeypatch.chdir(root.parent)
    site = Site(root)
    result = run_playbook(site, load_inventory(Path(root.name) / "inventory.ini"), playbook=playbook)
    assert set(result.hosts) == {"h1", "h2"}
    assert (root / "first-h1").exists() and (root / "first-h2").exists()
