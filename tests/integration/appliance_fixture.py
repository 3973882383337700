"""Session fixture `appliance`: the installed lab's API over HTTPS with its first admin, made as the
README says (`aicc admin create`, the password from a 0600 file)."""

from __future__ import annotations

import secrets
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.site_fixture import AICC, InstalledSite


@dataclass
class Appliance:
    site: InstalledSite
    url: str
    ca: Path
    token: str

    def api(self, method: str, path: str, *, token: str | None = "", **kw: Any) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        with httpx.Client(verify=ssl.create_default_context(cafile=self.ca), timeout=15) as client:
            return client.request(method, self.url + path, headers=headers, **kw)

    def ssh(self, group: str, cmd: str) -> subprocess.CompletedProcess[str]:
        return self.site.ssh(self.site.hosts_in(group)[0], cmd)

    def agent_id(self, username: str) -> int:
        agents = self.api("GET", "/api/agents").json()
        return int(next(a["user_id"] for a in agents if a["username"] == username))

    def set_status(self, username: str, status: str, reason: str = "") -> httpx.Response:
        return self.api(
            "POST", f"/api/agents/{self.agent_id(username)}/status", json={"status": status, "reason": reason}
        )


@pytest.fixture(scope="session")
def appliance(installed_site: InstalledSite) -> Appliance:
    site = installed_site.site
    url = f"https://{installed_site.address_of('app')}"
    # The first admin, made as the README says: `aicc admin create`, the password from a 0600 file.
    password = secrets.token_urlsafe(16) + "aA1!"
    pwfile = site / "admin-password"
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    made = subprocess.run(
        [AICC, "admin", "create", "--site", str(site), "--username", "admin", "--password-file", str(pwfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert password not in made.stdout + made.stderr
    ca = site / "pki" / "ca.crt"
    with httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=15) as client:
        login = client.post(f"{url}/api/auth/login", json={"username": "admin", "password": password})
    assert login.status_code == 200, login.text
    return Appliance(installed_site, url, ca, login.json()["token"])
