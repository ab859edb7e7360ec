"""Fetch a Debian guest kernel (vmlinuz + modules) into the rig's cache, without installing it.

Runnable with the system python3 (stdlib only) to pre-fetch the kernel::

    python3 tests/e2e/vmdev_rig/kernel.py [--flavour cloud|generic] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "vmdev_rig"

from .errors import INSTALL_HINT, RigSetupError

# Metapackage per flavour. "cloud" is small and boots ~2x faster under TCG; "generic" has
# 9p, AHCI, e1000e, virtio-crypto and virtio-gpu drivers.
FLAVOURS: dict[str, str] = {
    "cloud": "linux-image-cloud-amd64",
    "generic": "linux-image-amd64",
}
DEFAULT_FLAVOUR = "cloud"
_DEPENDS_RE = re.compile(r"^\s*Depends:\s*(linux-image-[0-9]\S*)\s*$", re.MULTILINE)
_COMMAND_TIMEOUT = 600.0


@dataclass(frozen=True)
class KernelInfo:
    """An unpacked guest kernel in the cache."""

    vmlinuz: Path
    modules_dir: Path  # the unpacked lib/modules/<version> tree
    version: str  # e.g. "6.1.0-56-cloud-amd64"
    flavour: str


def default_cache_dir() -> Path:
    """``$VMDEV_TEST_CACHE``, else ``~/.cache/vmdev-tests``."""
    env = os.environ.get("VMDEV_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vmdev-tests"


def ensure_kernel(cache_dir: Path | None = None, flavour: str = DEFAULT_FLAVOUR) -> KernelInfo:
    """Return the cached guest kernel of ``flavour``, downloading and unpacking it if needed.

    The concrete package is resolved through the flavour's metapackage, because its ABI number
    changes with every kernel update. If apt cannot resolve it, the newest cached kernel of
    that flavour is used. Raises RigSetupError with the fix command on any failure.
    """
    kernels = (cache_dir if cache_dir is not None else default_cache_dir()) / "kernels"
    metapackage = _metapackage(flavour)
    try:
        package = resolve_kernel_package(metapackage)
    except RigSetupError:
        cached = _newest_cached(kernels, flavour)
        if cached is None:
            raise
        return cached
    target = kernels / package
    found = _load_cached(target, flavour)
    if found is not None:
        return found
    _mkdir(kernels)
    with _locked(kernels / ".lock"):
        found = _load_cached(target, flavour)
        return found if found is not None else _fetch(package, target, flavour)


def resolve_kernel_package(metapackage: str) -> str:
    """Concrete ``linux-image-<abi>-<flavour>`` package that ``metapackage`` depends on."""
    output = _run(["apt-cache", "depends", metapackage], what=f"resolve {metapackage}")
    match = _DEPENDS_RE.search(output)
    if match is None:
        raise _setup_error(
            f"`apt-cache depends {metapackage}` names no linux-image package (apt package lists "
            "missing or stale?)",
            output,
        )
    return match.group(1)


def _metapackage(flavour: str) -> str:
    try:
        return FLAVOURS[flavour]
    except KeyError:
        raise ValueError(f"unknown kernel flavour {flavour!r}; known: {sorted(FLAVOURS)}") from None


def _load_cached(target: Path, flavour: str) -> KernelInfo | None:
    marker = target / "version"
    if not marker.is_file():
        return None
    version = marker.read_text().strip()
    info = KernelInfo(target / "vmlinuz", target / "modules", version, flavour)
    return info if info.vmlinuz.is_file() and info.modules_dir.is_dir() else None


def _newest_cached(kernels: Path, flavour: str) -> KernelInfo | None:
    suffix = FLAVOURS[flavour].removeprefix("linux-image")  # "-cloud-amd64" / "-amd64"
    candidates: list[KernelInfo] = []
    for target in sorted(kernels.glob("linux-image-*")) if kernels.is_dir() else []:
        info = _load_cached(target, flavour)
        rest = target.name.removeprefix("linux-image-")
        if info is not None and re.fullmatch(r"[0-9][0-9.]*-[0-9]+" + re.escape(suffix), rest):
            candidates.append(info)
    return max(candidates, key=lambda k: _version_key(k.version), default=None)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def _fetch(package: str, target: Path, flavour: str) -> KernelInfo:
    version = package.removeprefix("linux-image-")
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        _run(["apt-get", "download", "-q", package], what=f"download {package}", cwd=work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise _setup_error(f"`apt-get download {package}` produced no .deb file", "")
        root = work / "root"
        _run(["dpkg", "-x", str(debs[0]), str(root)], what=f"unpack {debs[0].name}")
        stage = _stage(root, work / "stage", version)
        os.rename(stage, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = _load_cached(target, flavour)
    if found is None:
        raise _setup_error(f"kernel cache entry {target} is incomplete after unpacking", "")
    return found


def _stage(root: Path, stage: Path, version: str) -> Path:
    """Move the pieces the rig needs (vmlinuz, config, modules tree) into ``stage``."""
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    modules = next(
        (
            p
            for p in (
                root / "lib" / "modules" / version,
                root / "usr" / "lib" / "modules" / version,
            )
            if p.is_dir()
        ),
        None,
    )
    if not vmlinuz.is_file() or modules is None:
        raise _setup_error(f"the kernel package for {version} lacks vmlinuz or its modules", "")
    stage.mkdir()
    os.replace(vmlinuz, stage / "vmlinuz")
    os.replace(modules, stage / "modules")
    config = root / "boot" / f"config-{version}"
    if config.is_file():
        os.replace(config, stage / "config")
    (stage / "version").write_text(version + "\n")  # written last: marks the entry complete
    return stage


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _setup_error(f"cannot create the kernel cache directory {path}: {exc}", "") from exc


def _run(argv: list[str], *, what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _setup_error(f"cannot {what}: `{' '.join(argv)}` failed to run: {exc}", "") from exc
    if proc.returncode != 0:
        raise _setup_error(
            f"cannot {what}: `{' '.join(argv)}` exited {proc.returncode}", proc.stdout + proc.stderr
        )
    return proc.stdout


def _setup_error(problem: str, output: str) -> RigSetupError:
    detail = f" Output: {output.strip()[-800:]}" if output.strip() else ""
    return RigSetupError(
        f"Guest kernel unavailable: {problem}. The rig downloads a Debian kernel package with "
        f"apt-get (it is unpacked into the cache, never installed); this needs apt's package "
        f"lists and network access to the Debian archive. Fix: run `{INSTALL_HINT}` (it runs "
        f"apt-get update, installs QEMU and busybox-static and pre-fetches the kernel).{detail}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pre-fetch the vmdev test rig's guest kernel.")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default=DEFAULT_FLAVOUR)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $VMDEV_TEST_CACHE or ~/.cache/vmdev-tests",
    )
    args = parser.parse_args(argv)
    try:
        info = ensure_kernel(args.cache_dir, args.flavour)
    except RigSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"guest kernel {info.version}: {info.vmlinuz} (modules: {info.modules_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
