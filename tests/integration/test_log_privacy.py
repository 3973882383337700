"""No caller's phone number and no secret of the site in any host's journal after a real call."""

from __future__ import annotations

import asyncio
import secrets
import subprocess

import yaml

from aicc.installer.lab.ssh import ssh_args
from aicc.installer.smoke import SmokeParams, run_smoke
from tests.integration.site_fixture import InstalledSite
from tests.integration.test_voicebot import proxy_of


def test_no_phone_number_or_secret_in_any_hosts_journal(installed_site: InstalledSite) -> None:
    # A mainland mobile number no other test uses, so a hit can only come from this call.
    number = "139" + "".join(secrets.choice("0123456789") for _ in range(8))
    params = SmokeParams(
        proxy=proxy_of(installed_site), target="sip:4000@aicc.local", lang="en", number=number
    )
    asyncio.run(run_smoke(params))  # the answer is judged by the voice bot's tests
    values = yaml.safe_load((installed_site.site / "secrets.yml").read_text(encoding="utf-8"))
    secret_values = {k: str(v) for k, v in values.items() if isinstance(v, str | int) and len(str(v)) >= 8}
    leaks = []
    needles = "\n".join([number, *secret_values.values()]) + "\n"
    for host, address in installed_site.hosts.items():
        # The needles travel on stdin, never on a command line; only counts come back.
        script = "f=$(mktemp); cat >$f; journalctl --no-pager -o cat | grep -oFf $f | sort | uniq -c; rm $f"
        out = subprocess.run(
            [*ssh_args(installed_site.site, address), script],
            input=needles,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
        for line in out.splitlines():
            count, _, found = line.strip().partition(" ")
            what = (
                "the caller's number"
                if found == number
                else next((f"secret {k}" for k, v in secret_values.items() if v == found), "a secret")
            )
            leaks.append(f"{host}: {what} appears {count} times")
    assert not leaks, leaks
