"""The bundle's SBOM, CycloneDX 1.6 JSON (cyclonedx-python-lib): every .deb, wheel, model and binary
inside, with its package URL and sha256, so the customer's scanners read what they are installing."""

from __future__ import annotations

import hashlib
import re
import uuid

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from aicc.installer.bundle.aptrepo import ARCH, Deb
from aicc.installer.bundle.archive import FileEntry

# name-version(-build)?-pyX-abi-platform.whl (PEP 427)
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def _component(kind: ComponentType, name: str, version: str, purl: PackageURL, sha256: str) -> Component:
    return Component(
        name=name,
        version=version,
        type=kind,
        purl=purl,
        bom_ref=purl.to_string(),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)],
    )


def render(aicc_version: str, debs: list[Deb], files: list[FileEntry]) -> str:
    """Deterministic for the same contents (serial from the file hashes, no timestamp: the signed
    manifest carries the build time), so an unchanged rebuild keeps the archive."""
    digest = hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()
    bom = Bom(serial_number=uuid.UUID(digest[:32]))
    bom.metadata.timestamp = None  # type: ignore[assignment]
    root = Component(
        name="aicc-offline-bundle",
        version=aicc_version,
        type=ComponentType.APPLICATION,
        bom_ref="aicc-offline-bundle",
    )
    bom.metadata.component = root
    pool = {f.path.rsplit("/", 1)[-1]: f for f in files if f.path.startswith("apt/pool/")}
    for deb in debs:
        purl = PackageURL(
            type="deb", namespace="debian", name=deb.name, version=deb.version, qualifiers={"arch": ARCH}
        )
        sha = pool[deb.file_name].sha256
        bom.components.add(_component(ComponentType.LIBRARY, deb.name, deb.version, purl, sha))
    for f in files:
        name = f.path.rsplit("/", 1)[-1]
        if f.path.startswith("wheels/") and (m := _WHEEL.match(name)):
            purl = PackageURL(type="pypi", name=m["name"].lower().replace("_", "-"), version=m["version"])
            bom.components.add(_component(ComponentType.LIBRARY, m["name"], m["version"], purl, f.sha256))
        elif f.source.startswith("model:"):
            model = f.source.split(":", 1)[1]
            purl = PackageURL(type="generic", namespace="aicc-model", name=model, subpath=f.path)
            bom.components.add(
                _component(ComponentType.MACHINE_LEARNING_MODEL, model, "catalog", purl, f.sha256)
            )
        elif f.source == "build":
            purl = PackageURL(type="generic", name=name, version=aicc_version, subpath=f.path)
            bom.components.add(_component(ComponentType.APPLICATION, name, aicc_version, purl, f.sha256))
    bom.register_dependency(root, list(bom.components))
    return JsonV1Dot6(bom).output_as_string(indent=1)
