"""What the bundle must hold, read from the roles themselves (one source of truth, like kubespray's
downloads list): every `<role>_packages` list in a role's defaults is a Debian package set a role
installs; `tests/unit/test_bundle.py` keeps every apt task of every role on such a variable.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

# Lists of packages a role removes, not installs.
NOT_INSTALLED = frozenset({"hardening_remove_packages"})
# What Ansible itself needs on a target before any role runs (python3-apt for the apt module): a
# minimal Debian 12 server may lack them, so the bundle always carries them.
HOST_PREREQUISITES = ("python3", "python3-apt", "gpgv", "sudo", "ca-certificates")


def package_variables(roles: Path) -> dict[str, list[str]]:
    """`{variable: [package, ...]}` over every role's defaults, templated against those defaults."""
    found: dict[str, list[str]] = {}
    for defaults in sorted(roles.glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text(encoding="utf-8")) or {}
        for name, value in data.items():
            if not name.endswith("_packages") or name in NOT_INSTALLED:
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{defaults}: {name} must be a list of package names")
            found[name] = [_render(v, data, defaults, name) for v in value]
    return found


def _render(value: str, context: dict[str, object], defaults: Path, name: str) -> str:
    if "{{" not in value:
        return value
    # Package names, not HTML: nothing to escape.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    rendered = env.from_string(value).render(context)
    if "{{" in rendered or not rendered.strip():
        raise ValueError(f"{defaults}: {name} entry {value!r} does not resolve from the role's defaults")
    return rendered


def role_packages(roles: Path) -> list[str]:
    """Every package any role installs plus the host prerequisites, sorted and unique."""
    names = {p for pkgs in package_variables(roles).values() for p in pkgs}
    return sorted(names | set(HOST_PREREQUISITES))
