"""Run the site playbook through ansible-runner: progress per host, a log file, a summary, --resume.

Secrets reach Ansible as `-e @secrets.yml` (the 0600 file itself, never the command line) and every
line written to the log is scrubbed of secret values as a second line of defence behind `no_log`.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, TextIO

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from aicc.installer.errors import InputError
from aicc.installer.inventory import Inventory
from aicc.installer.settings import settings_to_ansible_vars
from aicc.installer.site import Site, require_channel_secrets
from aicc.installer.sizing import firewall_rules

SITE_PLAYBOOK = "site.yml"
STATE_FILE = "install.json"


def playbooks_dir() -> Path:
    return Path(str(resources.files("aicc.installer").joinpath("playbooks")))


def wheelhouse_dir(site: Site) -> Path:
    """Wheels hosts install aicc from: the site's offline bundle, else `aicc models wheelhouse`'s cache."""
    bundled = site.root / "bundle" / "wheels"
    return bundled if bundled.is_dir() else Path("/var/cache/aicc/wheelhouse")


def bundle_built_at(bundle: Path) -> int | None:
    """Unix time the imported bundle was built (its verified manifest), for its age alert."""
    from aicc.installer.bundle.archive import MANIFEST, Manifest

    try:
        manifest = Manifest.model_validate_json((bundle / MANIFEST).read_bytes())
        return calendar.timegm(time.strptime(manifest.built_at, "%Y-%m-%dT%H:%M:%SZ"))
    except (OSError, ValueError):
        return None  # no bundle imported (or one from before manifests were kept): no age to publish


def check_package_source(site: Site) -> None:
    """Before the site's playbooks touch any host: with packages.source=bundle served from here, a
    bundle is imported and holds every package packages.extra names."""
    from aicc.installer.bundle.aptrepo import package_names

    settings = site.settings()
    bundle = site.root / "bundle"
    if settings.packages.source != "bundle" or settings.packages.url:
        return
    if not (bundle / "apt" / "dists").is_dir():
        raise InputError(
            f"packages.source is bundle but {bundle} holds no imported bundle",
            where=str(site.settings_path),
            fix=f"on a connected machine `aicc bundle build --out aicc.bundle`, then here "
            f"`aicc bundle import aicc.bundle --site {site.root}` (or set packages.url to a repository)",
        )
    missing = sorted(set(settings.packages.extra) - package_names(bundle / "apt"))
    if missing:
        raise InputError(
            f"packages.extra names {', '.join(missing)}, which the imported bundle does not hold",
            where=str(site.settings_path),
            fix="add the .deb to the bundle (`aicc bundle build --with-deb FILE.deb ...`) and import "
            "it again, or take the name out of packages.extra",
        )


def bundle_vars(site: Site, inventory: Inventory, stack: contextlib.ExitStack[bool | None]) -> dict[str, str]:
    """Where the roles take models, llama-server and Debian packages from when the site has a bundle;
    with packages.source=bundle and no url, the bundle's repository is served from this machine."""
    from aicc.installer.bundle.aptrepo import PUBLIC_KEY
    from aicc.installer.bundle.build import LLAMA_SERVER
    from aicc.installer.bundle.serve import serving, source_address

    settings = site.settings()
    bundle = site.root / "bundle"
    found: dict[str, str] = {}
    if (bundle / "models").is_dir():
        found["speech_model_store_src"] = found["llm_model_store_src"] = str(bundle / "models")
    if (bundle / LLAMA_SERVER).is_file():
        found["llm_llamacpp_binary_src"] = str(bundle / LLAMA_SERVER)
    built = bundle_built_at(bundle)
    if built is not None:
        found["common_bundle_built_at"] = str(built)
    if settings.packages.source != "bundle":
        return found
    if (bundle / "apt" / PUBLIC_KEY).is_file():
        found["common_apt_key_src"] = str(bundle / "apt" / PUBLIC_KEY)
    # Without an imported bundle nothing is served: the site's playbooks are refused before they start
    # (check_package_source), and the common role would stop with the same fix.
    if not settings.packages.url and (bundle / "apt" / "dists").is_dir():
        first = next(iter(inventory.hosts.values()))
        found["common_apt_url"] = stack.enter_context(
            serving(
                bundle / "apt", site.root / "pki", source_address(first.address), settings.packages.serve_port
            )
        )
    return found


def render_monitoring_rules(runner_dir: Path, inventory: Inventory) -> Path:
    """Render aicc.monitoring's rules for the monitoring role; runbook links point at the first app
    host's /ops/runbook (the appliance serves the runbook)."""
    from aicc.monitoring.render import write_rules
    from aicc.monitoring.slo import DefinitionError

    app = inventory.group("app")
    address = app[0].address if app else "localhost"
    host = f"[{address}]" if ":" in address else address
    try:
        return write_rules(runner_dir / "monitoring-rules", f"https://{host}/ops/runbook").folder
    except DefinitionError as exc:
        raise InputError(exc.message, where=f"{exc.path} field {exc.field}") from exc


def render_monitoring_dashboards(runner_dir: Path, locale: str) -> Path:
    """Render the Grafana dashboards from aicc.monitoring's panels (the ones /ops/ draws) for the
    monitoring role, titled in the site locale's language."""
    from aicc.monitoring.slo import DefinitionError

    try:
        from aicc.monitoring.grafana import language_of, write_dashboards
    except ImportError as exc:
        raise InputError(
            f"the Grafana dashboards cannot be rendered: {exc}",
            fix="run scripts/bootstrap (or `pip install 'aicc[installer]'`) on this machine",
        ) from exc
    folder = runner_dir / "monitoring-dashboards"
    try:
        write_dashboards(folder, language_of(locale))
    except DefinitionError as exc:
        raise InputError(exc.message, where=f"{exc.path} field {exc.field}") from exc
    return folder


def roles_dir() -> Path:
    return Path(str(resources.files("aicc.roles")))


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass
class Failure:
    host: str
    play: str
    task: str
    message: str


@dataclass
class RunReport:
    status: str
    rc: int
    seconds: float
    log: Path
    hosts: dict[str, HostStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    resume_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "rc": self.rc,
            "seconds": round(self.seconds, 1),
            "log": str(self.log),
            "hosts": {h: vars(s) for h, s in self.hosts.items()},
            "failures": [vars(f) for f in self.failures],
            "resume_from": self.resume_from,
        }


def load_plays(path: Path) -> list[dict[str, Any]]:
    plays = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(plays, list):
        raise InputError("a playbook must be a list of plays", where=str(path))
    return plays


def ansible_env(site: Site) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_ROLES_PATH": str(roles_dir()),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=15",
        "ANSIBLE_FORKS": "20",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_GATHER_TIMEOUT": "30",
        "ANSIBLE_TIMEOUT": "20",
        # Nothing phones home: ansible-core itself sends nothing, but be explicit for its plugins.
        "DO_NOT_TRACK": "1",
    }


def count_tasks(
    site: Site, inventory: Inventory, playbook: Path, extra: list[str], limit: str | None, tags: str | None
) -> dict[str, int]:
    """Tasks per host, from `ansible-playbook --list-hosts --list-tasks` (static tasks only)."""
    cmd = [
        "ansible-playbook",
        "-i",
        str(inventory.path.resolve()),
        str(playbook),
        "--list-hosts",
        "--list-tasks",
        *extra,
    ]
    if limit:
        cmd += ["--limit", limit]
    if tags:
        cmd += ["--tags", tags]
    env = {**os.environ, **ansible_env(site)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=120)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise InputError(
            f"the playbook does not load: {msg[-1] if msg else proc.returncode}", where=str(playbook)
        )
    return parse_task_listing(proc.stdout)


_PLAY = re.compile(r"^\s{2}play #\d+ \(")


def parse_task_listing(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    hosts: list[str] = []
    section = ""
    for line in text.splitlines():
        if _PLAY.match(line):
            hosts, section = [], ""
            continue
        stripped = line.strip()
        if stripped.startswith("hosts ("):
            section = "hosts"
            continue
        if stripped == "tasks:":
            section = "tasks"
            continue
        if not stripped or stripped.startswith("pattern:"):
            continue
        if section == "hosts" and line.startswith("      "):
            hosts.append(stripped)
        elif section == "tasks" and line.startswith("      ") and "\tTAGS:" in line:
            for h in hosts:
                counts[h] = counts.get(h, 0) + 1
    return counts


class _Display:
    """A Rich progress row per host: task n of N and the current role/task."""

    def __init__(self, console: Console, totals: dict[str, int]) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[host]:<12}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.description}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.rows: dict[str, TaskID] = {}
        self.totals = totals

    def row(self, host: str) -> TaskID:
        if host not in self.rows:
            self.rows[host] = self.progress.add_task(
                "waiting", host=host, total=max(self.totals.get(host, 1), 1)
            )
        return self.rows[host]

    def started(self, host: str, label: str) -> None:
        self.progress.update(self.row(host), description=label)

    def finished(self, host: str, status: str) -> None:
        row = self.row(host)
        task = self.progress.tasks[self.progress.task_ids.index(row)]
        total = task.total or 1
        total = max(total, task.completed + 1)
        self.progress.update(
            row, advance=1, total=total, description=status if status != "ok" else task.description
        )


def scrubber(secrets: dict[str, str]) -> Callable[[str], str]:
    values = sorted((v for v in secrets.values() if len(v) >= 8), key=len, reverse=True)
    if not values:
        return lambda s: s
    pattern = re.compile("|".join(re.escape(v) for v in values))
    return lambda s: pattern.sub("********", s)


def run_playbook(
    site: Site,
    inventory: Inventory,
    *,
    playbook: Path | None = None,
    limit: str | None = None,
    tags: str | None = None,
    resume: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    state_name: str = STATE_FILE,
) -> RunReport:
    """Run a playbook on the site; with packages.source=bundle, the site's bundle repository is served to
    the hosts over HTTPS for exactly as long as the run lasts."""
    if playbook is None or playbook.parent == playbooks_dir():
        check_package_source(site)  # aicc's own playbooks install packages: refused before any host
    with contextlib.ExitStack() as stack:
        return _run(
            site,
            inventory,
            stack,
            playbook=playbook,
            limit=limit,
            tags=tags,
            resume=resume,
            console=console,
            show_progress=show_progress,
            state_name=state_name,
        )


def _run(
    site: Site,
    inventory: Inventory,
    stack: contextlib.ExitStack[bool | None],
    *,
    playbook: Path | None = None,
    limit: str | None = None,
    tags: str | None = None,
    resume: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    state_name: str = STATE_FILE,
) -> RunReport:
    import ansible_runner

    settings = site.settings()
    secrets = site.secrets()
    if playbook is None:
        # A channel turned on without its secrets fails here, before any host is touched.
        require_channel_secrets(settings, secrets, site.secrets_path)
    if limit:
        inventory.select(limit)  # fails early, naming a host or group that matches nothing
    site.logs.mkdir(parents=True, exist_ok=True)
    site.state.mkdir(parents=True, exist_ok=True)
    runner_dir = site.root / ".runner"
    (runner_dir / "env").mkdir(parents=True, exist_ok=True)
    vars_file = runner_dir / "site-vars.yml"
    installer_vars = {
        "aicc_site_dir": str(site.root),
        "aicc_wheelhouse": str(wheelhouse_dir(site)),
        "aicc_monitoring_rules_dir": str(render_monitoring_rules(runner_dir, inventory)),
        "aicc_monitoring_dashboards_dir": str(render_monitoring_dashboards(runner_dir, settings.locale)),
        "aicc_version": metadata.version("aicc"),  # published per host with each successful install
        **firewall_rules(settings),
        **bundle_vars(site, inventory, stack),
    }
    vars_file.write_text(
        yaml.safe_dump({**settings_to_ansible_vars(settings), **installer_vars}), encoding="utf-8"
    )

    source = playbook or playbooks_dir() / SITE_PLAYBOOK
    plays = load_plays(source)
    offset = 0
    state_path = site.state / state_name
    if resume:
        state = _read_state(state_path)
        if state is None:
            raise InputError(
                "nothing to resume: the last install did not fail (or never ran)",
                where=str(state_path),
                fix="run `aicc install` without --resume",
            )
        offset = int(state["resume_from_index"])
        if offset >= len(plays):
            raise InputError("the saved resume point is past the end of the playbook", where=str(state_path))
        source = runner_dir / "resume.yml"
        source.write_text(yaml.safe_dump(plays[offset:], sort_keys=False), encoding="utf-8")
    play_names = [str(p.get("name", f"play {i + 1}")) for i, p in enumerate(plays)]

    extra = ["-e", f"@{vars_file}", "-e", f"@{site.secrets_path}"]
    if limit:
        # The site PKI play runs on the installer host; every host's certificates come from it.
        limit = f"{limit},localhost"
    console = console or Console()
    totals = count_tasks(site, inventory, source, extra, limit, tags) if show_progress else {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = site.logs / f"install-{stamp}.log"
    scrub = scrubber(secrets)
    display = _Display(console, totals) if show_progress else None
    failures: list[Failure] = []
    current = _Position(play_index=offset - 1)
    failed_play_index: list[int] = []

    with log_path.open("w", encoding="utf-8") as log:
        log.write(
            f"# aicc install {stamp}: {source} on {inventory.path}"
            f"{' limit=' + limit if limit else ''}{' tags=' + tags if tags else ''}\n"
        )

        def on_event(event: dict[str, Any]) -> bool:
            _log_event(log, event, scrub)
            kind = event.get("event", "")
            data = event.get("event_data", {})
            if kind == "playbook_on_play_start":
                current.play_index += 1
                current.play = str(data.get("play", ""))
            host = data.get("host")
            if display and host:
                label = f"{data.get('role') + ' : ' if data.get('role') else ''}{data.get('task', '')}"
                if kind == "runner_on_start":
                    display.started(host, label)
                elif kind in ("runner_on_ok", "runner_on_skipped"):
                    display.finished(host, "ok")
                elif kind == "runner_on_failed":
                    display.finished(host, "ok" if data.get("ignore_errors") else "FAILED: " + label)
                elif kind == "runner_on_unreachable":
                    display.finished(host, "UNREACHABLE")
            if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
                failures.append(
                    Failure(
                        host or "?",
                        current.play,
                        str(data.get("task", "")),
                        scrub(_failure_message(data.get("res", {}))),
                    )
                )
                failed_play_index.append(current.play_index)
            return True

        started = time.monotonic()
        ctx = display.progress if display else _Null()
        with ctx:
            runner = ansible_runner.run(
                private_data_dir=str(runner_dir),
                playbook=str(source),
                inventory=str(inventory.path.resolve()),  # the runner does not run in our cwd
                cmdline=" ".join(extra),
                limit=limit,
                tags=tags,
                envvars=ansible_env(site),
                event_handler=on_event,
                quiet=True,
                rotate_artifacts=3,
                suppress_env_files=True,
            )
        seconds = time.monotonic() - started

    stats = runner.stats or {}
    hosts: dict[str, HostStats] = {}
    for key, attr in (
        ("ok", "ok"),
        ("changed", "changed"),
        ("failures", "failed"),
        ("dark", "unreachable"),
        ("skipped", "skipped"),
    ):
        for host, n in (stats.get(key) or {}).items():
            setattr(hosts.setdefault(host, HostStats()), attr, n)

    report = RunReport(
        status=runner.status, rc=runner.rc, seconds=seconds, log=log_path, hosts=hosts, failures=failures
    )
    if not report.ok:
        if not failures and runner.rc != 0:
            report.failures.append(Failure("-", current.play, "-", _tail(log_path)))
        index = min(failed_play_index) if failed_play_index else max(current.play_index, offset)
        index = max(index, 0)
        _write_state(
            state_path,
            {
                "resume_from_index": index,
                "play": play_names[min(index, len(plays) - 1)],
                "log": str(log_path),
            },
        )
        report.resume_from = play_names[min(index, len(plays) - 1)]
    elif state_path.exists() and not limit and not tags:
        state_path.unlink()
    return report


@dataclass
class _Position:
    play_index: int
    play: str = ""


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _log_event(log: TextIO, event: dict[str, Any], scrub: Callable[[str], str]) -> None:
    text = event.get("stdout")
    if text:
        log.write(scrub(_ANSI.sub("", text)) + "\n")
        log.flush()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failure_message(res: dict[str, Any]) -> str:
    if res.get("_ansible_no_log") or res.get("censored"):
        return "a task that handles secrets failed (output hidden by no_log); see the log for the task name"
    parts = [str(res.get("msg", "")).strip()]
    for key in ("stderr", "module_stderr", "stdout"):
        value = str(res.get(key, "") or "").strip()
        if value and value not in parts[0]:
            parts.append(value.splitlines()[-1][:400])
            break
    return " | ".join(p for p in parts if p) or json.dumps(res)[:400]


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(encoding="utf-8").strip().splitlines()[-lines:])
    except OSError:
        return "see the log"


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "resume_from_index" in data else None


def _write_state(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
