"""Build llama.cpp's `llama-server` from pinned sources and cache it.

No registry ships a llama-server binary (PLATFORM-NOTES): the llama.cpp sources vendored in the
`llama-cpp-python` sdist are pinned by version and sha256, built once per (version, flags) and cached
under /var/cache/aicc/llama-server/<key>/llama-server. CI, users and the offline bundle all call this
same function, so every site runs the same binary recipe.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aicc.installer.errors import InputError, RunFailed

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Static, no curl (targets are offline and have no model hub), portable x86-64 (AVX2/FMA baseline,
# not -march=native: the binary is built on the installer host and copied to other hosts).
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
)
# Bump when this recipe changes in a way the flags do not show.
RECIPE_REVISION = "1"
DEFAULT_CACHE = Path("/var/cache/aicc/llama-server")
DEFAULT_SRC_CACHE = Path("/var/cache/aicc/src")
BINARY_NAME = "llama-server"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class BuiltServer:
    path: Path
    sha256: str
    key: str
    cached: bool


def build_key(version: str = LLAMA_CPP_PYTHON_VERSION, flags: tuple[str, ...] = CMAKE_FLAGS) -> str:
    """Cache key: a hash of everything that decides the binary."""
    text = "\n".join([version, SDIST_SHA256, RECIPE_REVISION, *flags])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_binary(cache_root: Path = DEFAULT_CACHE) -> Path | None:
    """The cached binary for the pinned recipe, if present and matching its manifest."""
    target = cache_root / build_key() / BINARY_NAME
    manifest = target.parent / MANIFEST_NAME
    if not target.is_file() or not manifest.is_file():
        return None
    recorded = json.loads(manifest.read_text()).get("sha256")
    if recorded != sha256_file(target):
        return None
    return target


def fetch_sdist(src_cache: Path = DEFAULT_SRC_CACHE, log: Callable[[str], None] = print) -> Path:
    """The pinned sdist from the cache, or downloaded with pip (the one registry client we trust)."""
    src_cache.mkdir(parents=True, exist_ok=True)
    sdist = src_cache / SDIST_NAME
    if not sdist.is_file():
        log(f"downloading {SDIST_NAME} with pip")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(src_cache),
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not sdist.is_file():
            raise RunFailed(
                f"pip could not download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}: "
                f"{proc.stderr.strip()[-400:]}",
                where=str(src_cache),
                fix=f"put {SDIST_NAME} into {src_cache} (from the offline bundle) and run again",
            )
    found = sha256_file(sdist)
    if found != SDIST_SHA256:
        raise InputError(
            f"checksum mismatch: expected sha256 {SDIST_SHA256}, found {found}",
            where=str(sdist),
            fix="delete the file and run `aicc models build-llama-server` again",
        )
    return sdist


def _run(cmd: list[str], cwd: Path, log_file: Path, what: str) -> None:
    with log_file.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace")[-1500:]
        raise RunFailed(
            f"{what} failed (exit {proc.returncode}):\n{tail}",
            where=str(log_file),
            fix="install cmake, g++ and libssl-dev, then run again; the full log is named above",
        )


def build_llama_server(
    cache_root: Path = DEFAULT_CACHE,
    src_cache: Path = DEFAULT_SRC_CACHE,
    *,
    jobs: int = 2,
    niceness: int = 10,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> BuiltServer:
    """Return the cached llama-server for the pinned recipe, building it first when missing."""
    key = build_key()
    if not force and (hit := cached_binary(cache_root)) is not None:
        return BuiltServer(hit, sha256_file(hit), key, cached=True)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise InputError(
                f"{tool} is not installed",
                where="installer host",
                fix="apt-get install --no-install-recommends cmake g++ libssl-dev",
            )
    sdist = fetch_sdist(src_cache, log)
    out_dir = cache_root / key
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / "build.log"
    log_file.write_text("")
    with tempfile.TemporaryDirectory(prefix="aicc-llama-build-", dir=cache_root) as tmp_name:
        tmp = Path(tmp_name)
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
        log(f"extracting llama.cpp sources from {sdist.name}")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(tmp, members=members, filter="data")
        src = tmp / prefix
        build = tmp / "build"
        nice = ["nice", "-n", str(niceness)] if niceness else []
        log(f"configuring ({' '.join(CMAKE_FLAGS)})")
        _run(
            [*nice, "cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], tmp, log_file, "cmake configure"
        )
        log(f"building llama-server with {jobs} jobs (about 8 minutes on 2 cores); log: {log_file}")
        _run(
            [*nice, "cmake", "--build", str(build), "--target", BINARY_NAME, "-j", str(jobs)],
            tmp,
            log_file,
            "cmake build",
        )
        built = build / "bin" / BINARY_NAME
        if not built.is_file():
            raise RunFailed(
                "the build finished but produced no llama-server binary",
                where=str(build),
                fix=f"see {log_file}",
            )
        staged = out_dir / f".{BINARY_NAME}.tmp"
        shutil.copy2(built, staged)
        staged.chmod(0o755)
        digest = sha256_file(staged)
        (out_dir / MANIFEST_NAME).write_text(
            json.dumps(
                {
                    "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
                    "sdist_sha256": SDIST_SHA256,
                    "cmake_flags": list(CMAKE_FLAGS),
                    "recipe": RECIPE_REVISION,
                    "sha256": digest,
                },
                indent=2,
            )
            + "\n"
        )
        staged.replace(out_dir / BINARY_NAME)  # atomic: a half-copied binary is never "cached"
    return BuiltServer(out_dir / BINARY_NAME, digest, key, cached=False)
