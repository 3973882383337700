"""The site a lab hands over: settings, secrets and an inventory for its hosts.

Re-running `lab up` rewrites only the inventory: the site's settings and its secrets are kept, so a
converged lab never sees its passwords rotate. Its hosts install from the offline bundle
(`packages.source: bundle`): `aicc demo` and the tests build and import one.
"""

from __future__ import annotations

from pathlib import Path

from aicc.installer.inventory import parse_inventory
from aicc.installer.lab.groups import render_inventory
from aicc.installer.lab.plan import LabPlan
from aicc.installer.lab.ssh import key_file, known_hosts_file
from aicc.installer.settings import load_settings, render_commented_yaml
from aicc.installer.site import Site, init_site


def write_site(root: Path, plan: LabPlan) -> Site:
    site = Site(root.resolve())
    text = render_inventory(plan, key_file(site.root), known_hosts_file(site.root))
    parse_inventory(text, site.inventory_path)  # our own output must pass the strict parser
    # Lab hosts have no way out: packages come from the offline bundle the installer serves.
    packages = {"source": "bundle", "url": ""}
    if site.settings_path.exists() and site.secrets_path.exists():
        site.inventory_path.write_text(text, encoding="utf-8")
        if load_settings(site.settings_path).packages.source == "proxy":
            set_package_source(site, **packages)  # a site from before the lab dropped its apt cache
        return site
    return init_site(
        site.root, profile="lab", inventory_text=text, overrides={"packages": packages}, force=True
    )


def set_package_source(site: Site, source: str, url: str) -> None:
    """Point the site's hosts at a package source (rewrites aicc.yml only when it changes)."""
    set_packages(site, source=source, url=url)


def set_packages(site: Site, **changes: object) -> None:
    """Change fields of the site's `packages` settings (rewrites aicc.yml only when one changes)."""
    settings = load_settings(site.settings_path)
    if all(getattr(settings.packages, name) == value for name, value in changes.items()):
        return
    packages = settings.packages.model_copy(update=changes)
    site.settings_path.write_text(
        render_commented_yaml(settings.model_copy(update={"packages": packages})), encoding="utf-8"
    )
