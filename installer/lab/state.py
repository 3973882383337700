"""What a lab created, written down before each thing is created, so `lab down` (or the next
`lab up` after a crash) removes exactly that and never touches anything else.

Processes are recorded with their start time (from /proc) so a recycled pid is never killed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from aicc.installer.lab.plan import LabPlan

STATE_ROOT_ENV = "AICC_LAB_STATE"
DEFAULT_STATE_ROOT = Path("/var/lib/aicc/lab")
STATE_FILE = "state.json"

Kind = Literal["bridge", "netns", "veth", "process", "dir"]


class Resource(BaseModel):
    kind: Kind
    name: str  # interface or netns name, folder path, or a label for a process
    pid: int | None = None
    start_time: int | None = None  # /proc/PID/stat field 22, clock ticks after boot


class LabState(BaseModel):
    plan: LabPlan
    site: str
    image: str
    resources: list[Resource] = Field(default_factory=list)
    complete: bool = False  # set once every host answered SSH


def state_root() -> Path:
    env = os.environ.get(STATE_ROOT_ENV)
    return Path(env) if env else DEFAULT_STATE_ROOT


def lab_dir(name: str) -> Path:
    return state_root() / name


def state_path(name: str) -> Path:
    return lab_dir(name) / STATE_FILE


def load_state(name: str) -> LabState | None:
    path = state_path(name)
    if not path.exists():
        return None
    return LabState.model_validate_json(path.read_text(encoding="utf-8"))


def save_state(state: LabState) -> None:
    path = state_path(state.plan.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash leaves the old or the new state, never half of one


def record(state: LabState, resource: Resource) -> None:
    """Write-ahead: note the resource before creating it."""
    state.resources.append(resource)
    save_state(state)


def all_labs() -> list[str]:
    root = state_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{STATE_FILE}"))


def proc_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def process_alive(res: Resource) -> bool:
    if res.pid is None:
        return False
    started = proc_start_time(res.pid)
    if started is None or started != res.start_time:
        return False
    try:
        status = Path(f"/proc/{res.pid}/status").read_text(encoding="utf-8")
    except OSError:
        return False
    return "\nState:\tZ" not in status
