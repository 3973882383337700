"""The model catalog: what each model is, where every file comes from, and its checksums.

The catalog is data (catalog.yml, shipped in the wheel), validated here. A bad entry fails naming the
file, the entry and the field, so a customer editing an override catalog knows what to fix.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aicc.installer.errors import InputError

Kind = Literal["llm", "asr", "tts", "vad"]
Engine = Literal["llamacpp", "vllm", "faster-whisper", "piper", "kokoro", "silero", "paddlespeech"]
Group = Literal["llm", "speech", "voicebot"]

_SHA256 = r"^[0-9a-f]{64}$"
_MD5 = r"^[0-9a-f]{32}$"
# Relative, no "..": each segment starts with a letter, digit or underscore.
_REL_PATH = (
    r"^[A-Za-z0-9_][A-Za-z0-9_+-]*(\.[A-Za-z0-9_+-]+)*(/[A-Za-z0-9_][A-Za-z0-9_+-]*(\.[A-Za-z0-9_+-]+)*)*$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WheelMember(_Strict):
    """One file inside a pinned registry wheel (fetched with `pip download --no-deps`)."""

    package: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    version: str = Field(pattern=r"^[0-9][A-Za-z0-9.+!-]*$")
    wheel_sha256: str = Field(pattern=_SHA256, description="sha256 of the .whl, checked before use")
    member: str = Field(pattern=_REL_PATH, description="path of the file inside the wheel")


class ModelFile(_Strict):
    """One final file of a model, as the engine reads it from the model store."""

    path: str = Field(pattern=_REL_PATH, description="relative to <store>/<model name>/")
    sha256: str | None = Field(None, pattern=_SHA256)
    md5: str | None = Field(None, pattern=_MD5, description="upstream's own checksum, where it publishes md5")
    size: int | None = Field(None, gt=0)
    # Exactly one source: pinned wheel parts joined in order, the offline bundle, or a file an installed
    # Python package ships (e.g. the Silero VAD model inside faster-whisper).
    parts: tuple[WheelMember, ...] = ()
    bundle: str | None = Field(None, pattern=_REL_PATH, description="path inside the offline bundle")
    package_resource: str | None = Field(None, pattern=r"^[A-Za-z0-9_.]+:[A-Za-z0-9._/-]+$")
    checksum_note: str | None = Field(None, description="why a checksum is missing, said plainly")

    @model_validator(mode="after")
    def _one_source_and_checksums(self) -> Self:
        sources = [bool(self.parts), self.bundle is not None, self.package_resource is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one source: parts, bundle or package_resource")
        if (self.parts or self.package_resource) and (self.sha256 is None or self.size is None):
            raise ValueError("files assembled from packages need both sha256 and size")
        # Honesty over completeness: a file whose sha256 is unknown must say why; verify then reports it
        # as unpinned instead of pretending it was checked.
        if self.sha256 is None and not self.checksum_note:
            raise ValueError("a file without sha256 needs checksum_note saying why")
        return self


class Hardware(_Strict):
    ram_gib: float = Field(ge=0)
    cpu_cores: int = Field(ge=1)
    gpu_memory_gib: float = Field(0, ge=0, description="0: runs on CPU")
    disk_gib: float = Field(ge=0)


class ModelEntry(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,80}$")
    kind: Kind
    languages: tuple[Literal["zh", "en"], ...] = Field(min_length=1)
    engine: Engine
    tier: Literal["embedded", "production"]
    default: bool = Field(False, description="the model the embedded engines use when none is named")
    description: str
    license: str
    group: Group = Field(description="inventory group whose hosts serve this model")
    hardware: Hardware
    files: tuple[ModelFile, ...] = Field(min_length=1)
    upstream: dict[str, str] = Field(
        default_factory=dict, description="upstream names, e.g. PaddleSpeech tags"
    )
    notes: str = ""

    @model_validator(mode="after")
    def _files_unique(self) -> Self:
        paths = [f.path for f in self.files]
        if len(paths) != len(set(paths)):
            raise ValueError("two files share one path")
        return self

    @property
    def fetchable(self) -> bool:
        """Assembled from registry packages by `aicc models fetch` (the rest arrive in the bundle)."""
        return all(f.parts or f.package_resource for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)


class Catalog(_Strict):
    version: int = Field(ge=1)
    models: tuple[ModelEntry, ...]

    @model_validator(mode="after")
    def _names_unique_one_default(self) -> Self:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        for kind in ("llm", "asr", "tts", "vad"):
            for lang in ("zh", "en"):
                defaults = [
                    m.name for m in self.models if m.default and m.kind == kind and lang in m.languages
                ]
                if len(defaults) > 1:
                    raise ValueError(f"more than one default {kind} model for {lang}: {', '.join(defaults)}")
        return self

    def get(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise InputError(
            f"no model named {name!r} in the catalog",
            fix=f"choose one of: {', '.join(m.name for m in self.models)}",
        )

    def default(self, kind: Kind, language: str = "en") -> ModelEntry:
        for m in self.models:
            if m.default and m.kind == kind and language in m.languages:
                return m
        raise InputError(f"the catalog has no default {kind} model for language {language}")


def _describe(error: ValidationError, raw: object) -> str:
    """First error as 'entry NAME, field a.b: message' so the reader finds the line."""
    first = error.errors()[0]
    loc = list(first["loc"])
    where = "catalog"
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        idx = loc[1]
        name = "?"
        if isinstance(raw, dict) and isinstance(raw.get("models"), list) and idx < len(raw["models"]):
            entry = raw["models"][idx]
            name = str(entry.get("name", f"#{idx}")) if isinstance(entry, dict) else f"#{idx}"
        where = f"entry {name!r} (models[{idx}])"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc) or "(entry)"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}, field {field}: {first['msg']}{more}"


def load_catalog_text(text: str, source: str) -> Catalog:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", where=source, fix="fix the YAML syntax") from exc
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        raise InputError(_describe(exc, raw), where=source, fix="correct that field of the catalog") from exc


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path`, or the one shipped in the package."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read the catalog: {exc.strerror}", where=str(path)) from exc
        return load_catalog_text(text, str(path))
    return _packaged()


@lru_cache(maxsize=1)
def _packaged() -> Catalog:
    ref = resources.files("aicc.models").joinpath("catalog.yml")
    return load_catalog_text(ref.read_text(encoding="utf-8"), "aicc/models/catalog.yml")
