"""`aicc admin create|url`: the password is asked twice or read from a private file, travels on the SSH
session's stdin only, and the service's answer becomes the verb's exit code and message.

SSH is replaced by a stand-in for the subprocess call in aicc.installer.remote, so the test sees the
exact ssh command line and stdin the real client would get."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from aicc.installer import admin, remote
from aicc.installer.errors import EXIT_FAILED, EXIT_USAGE, InputError, RunFailed
from aicc.installer.sizing import GROUPS

PASSWORD = "Correct-Horse-42-battery"
ROLE_DEFAULTS = Path(__file__).resolve().parents[2] / "roles" / "appliance" / "defaults" / "main.yml"


def make_site(root: Path, *, user: str = "root", address: str = "10.0.0.61", settings: str = "") -> Path:
    root.mkdir()
    hosts = "".join(f"[{g}]\napp1 ansible_host={address} ansible_user={user}\n" for g in GROUPS)
    (root / "inventory.ini").write_text(hosts, encoding="utf-8")
    (root / "aicc.yml").write_text(settings, encoding="utf-8")
    return root


class FakeSsh:
    """Records every ssh invocation and answers like the remote command would."""

    def __init__(self, returncode: int = 0, stdout: str = "admin alice created\n", stderr: str = "") -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.answer = (returncode, stdout, stderr)

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((args, kwargs.get("input")))
        code, out, err = self.answer
        return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture
def ssh(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSsh]:
    fake = FakeSsh()
    monkeypatch.setattr(remote.subprocess, "run", fake)
    yield fake


def password_file(
    tmp_path: Path, text: str = PASSWORD + "\nignored second line\n", mode: int = 0o600
) -> Path:
    path = tmp_path / "pw"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(admin.app, list(args))


class Answers:
    """Stands in for getpass.getpass: the replies in order, and the prompts it was asked."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.asked: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.asked.append(prompt)
        return self.replies.pop(0)


# ---------------------------------------------------------------- reading the password


def test_file_password_is_its_first_line(tmp_path: Path) -> None:
    assert admin.password_from_file(password_file(tmp_path)) == PASSWORD


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_file_open_to_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = password_file(tmp_path, mode=mode)
    with pytest.raises(InputError, match="open to other users") as err:
        admin.password_from_file(path)
    assert err.value.fix == f"chmod 600 {path}" and err.value.where == str(path)


def test_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="first line is empty"):
        admin.password_from_file(password_file(tmp_path, text="\nsecond\n"))
    with pytest.raises(InputError, match="not found"):
        admin.password_from_file(tmp_path / "absent")


def test_terminal_password_is_asked_twice_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    ask = Answers(PASSWORD, PASSWORD)
    monkeypatch.setattr(admin.getpass, "getpass", ask)
    monkeypatch.setattr(admin, "stdin_is_terminal", lambda: True)
    assert admin.password_from_terminal("alice") == PASSWORD
    assert len(ask.asked) == 2 and "alice" in ask.asked[0]


def test_terminal_passwords_that_differ_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ssh: FakeSsh
) -> None:
    monkeypatch.setattr(admin.getpass, "getpass", Answers(PASSWORD, PASSWORD + "x"))
    monkeypatch.setattr(admin, "stdin_is_terminal", lambda: True)
    res = invoke("create", "--site", str(make_site(tmp_path / "s")))
    assert isinstance(res.exception, InputError) and "differ" in str(res.exception)
    assert ssh.calls == []


def test_terminal_password_reaches_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ssh: FakeSsh
) -> None:
    monkeypatch.setattr(admin.getpass, "getpass", Answers(PASSWORD, PASSWORD))
    monkeypatch.setattr(admin, "stdin_is_terminal", lambda: True)
    res = invoke("create", "--site", str(make_site(tmp_path / "s")))
    assert res.exit_code == 0, res.output
    ((args, stdin),) = ssh.calls
    assert stdin == PASSWORD + "\n" and not [a for a in args if PASSWORD in a]


def test_no_terminal_and_no_file_points_to_password_file(tmp_path: Path, ssh: FakeSsh) -> None:
    # CliRunner's stdin is not a terminal, like a script's.
    res = invoke("create", "--site", str(make_site(tmp_path / "s")))
    assert isinstance(res.exception, InputError) and res.exception.exit_code == EXIT_USAGE
    assert "--password-file" in str(res.exception.fix)
    assert ssh.calls == []


# ---------------------------------------------------------------- the remote call


def test_password_travels_on_stdin_never_on_the_command_line(tmp_path: Path, ssh: FakeSsh) -> None:
    site = make_site(tmp_path / "s")
    res = invoke(
        "create",
        "--site",
        str(site),
        "--username",
        "alice",
        "--display-name",
        "Alice 'Al' Wang; rm -rf /",
        "--password-file",
        str(password_file(tmp_path)),
    )
    assert res.exit_code == 0, res.output
    ((args, stdin),) = ssh.calls
    assert stdin == PASSWORD + "\n"
    assert not [a for a in args if PASSWORD in a]
    assert args[0] == "ssh" and "10.0.0.61" in args and "-l" in args
    remote_argv = shlex.split(args[-1])
    assert remote_argv == [
        "/opt/aicc/app/bin/python",
        "-m",
        "aicc.appliance.api",
        "admin",
        "create",
        "--config",
        "/etc/aicc/app.yml",
        "--username",
        "alice",
        "--display-name",
        "Alice 'Al' Wang; rm -rf /",
        "--password-stdin",
    ]
    assert "admin alice created" in res.output and "https://10.0.0.61/" in res.output


def test_a_sudo_user_runs_it_with_sudo_and_no_prompt(tmp_path: Path, ssh: FakeSsh) -> None:
    site = make_site(tmp_path / "s", user="deploy")
    res = invoke("create", "--site", str(site), "--password-file", str(password_file(tmp_path)))
    assert res.exit_code == 0, res.output
    ((args, stdin),) = ssh.calls
    assert shlex.split(args[-1])[:2] == ["sudo", "-n"] and stdin == PASSWORD + "\n"
    assert args[args.index("-l") + 1] == "deploy"


def test_json_is_one_document(tmp_path: Path, ssh: FakeSsh) -> None:
    site = make_site(tmp_path / "s", settings="app:\n  https_port: 8443\n")
    res = invoke("create", "--site", str(site), "--password-file", str(password_file(tmp_path)), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == {
        "ok": True,
        "host": "app1",
        "username": "admin",
        "url": "https://10.0.0.61:8443/",
        "message": "admin alice created",
    }


@pytest.mark.parametrize(
    ("answer", "error", "exit_code", "fragment"),
    [
        ((2, "", "weak password: fewer than 12 characters\n"), InputError, EXIT_USAGE, "weak password"),
        ((2, "", "user 'admin' already exists\n"), InputError, EXIT_USAGE, "already exists"),
        (
            (255, "", "ssh: connect to host 10.0.0.61 port 22: No route to host"),
            RunFailed,
            EXIT_FAILED,
            "reach",
        ),
        (
            (127, "", "bash: /opt/aicc/app/bin/python: No such file or directory"),
            RunFailed,
            EXIT_FAILED,
            "aicc install",
        ),
        ((1, "", "aicc-api: cannot reach the database"), RunFailed, EXIT_FAILED, "cannot reach the database"),
    ],
)
def test_service_answers_become_exit_codes_with_the_reason(
    tmp_path: Path,
    ssh: FakeSsh,
    answer: tuple[int, str, str],
    error: type[Exception],
    exit_code: int,
    fragment: str,
) -> None:
    ssh.answer = answer
    site = make_site(tmp_path / "s")
    res = invoke("create", "--site", str(site), "--password-file", str(password_file(tmp_path)))
    assert isinstance(res.exception, error), res.output
    assert getattr(res.exception, "exit_code", None) == exit_code
    assert fragment in str(res.exception) and "app1" in str(res.exception)


def test_password_echoed_by_the_host_is_masked(tmp_path: Path, ssh: FakeSsh) -> None:
    ssh.answer = (2, "", f"password {PASSWORD} is the username\n")
    site = make_site(tmp_path / "s")
    res = invoke("create", "--site", str(site), "--password-file", str(password_file(tmp_path)))
    assert isinstance(res.exception, InputError)
    assert PASSWORD not in str(res.exception) and "***" in str(res.exception)


# ---------------------------------------------------------------- url, and agreement with the role


@pytest.mark.parametrize(
    ("address", "settings", "url"),
    [
        ("10.0.0.61", "", "https://10.0.0.61/"),
        ("10.0.0.61", "app:\n  https_port: 8443\n", "https://10.0.0.61:8443/"),
        ("fd00::61", "", "https://[fd00::61]/"),
    ],
)
def test_url_is_https_on_the_first_app_host(tmp_path: Path, address: str, settings: str, url: str) -> None:
    site = make_site(tmp_path / "s", address=address, settings=settings)
    res = invoke("url", "--site", str(site))
    assert res.exit_code == 0 and res.stdout.strip() == url
    assert json.loads(invoke("url", "--site", str(site), "--json").stdout)["url"] == url


def test_remote_paths_are_where_the_role_installs_the_service() -> None:
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text(encoding="utf-8"))
    assert defaults["appliance_venv"] == admin.APP_VENV
    assert f"{defaults['appliance_config_dir']}/app.yml" == admin.APP_CONFIG
