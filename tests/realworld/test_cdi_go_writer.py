"""The CDI Go library writes plugins/cdi/tests/data/go-writer-vfio.json, and vmdev-cdi writes the same.

plugins/cdi/tests/gowriter is a Go program that builds the spec from the library's own types and
writes it with the library's own ``Cache.WriteSpec``; it is built here (GOPATH mode, against
Debian 12's packaged library 0.5.2; about 5 s cold) and run into tmp_path. Its output must be the
vendored file byte for byte (so the unit tests' "real Go output" is real), and vmdev-cdi's
``Registry.write_spec`` of the same spec must write the same bytes with the same file mode.

Needs go and the library's Debian package (not root): a missing one fails the module with the
command that installs it (never a skip).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "plugins" / "cdi" / "tests" / "gowriter"
VENDORED = REPO / "plugins" / "cdi" / "tests" / "data" / "go-writer-vfio.json"
NAME = VENDORED.name
GOPATH = "/usr/share/gocode"
LIBRARY = f"{GOPATH}/src/github.com/container-orchestrated-devices/container-device-interface/pkg/cdi"
PACKAGES = "golang-go golang-github-container-orchestrated-devices-container-device-interface-dev"


def _prerequisites() -> str | None:
    problems = []
    if shutil.which("go") is None:
        problems.append("missing go (Debian package golang-go)")
    if not os.path.isdir(LIBRARY):
        problems.append(f"missing the CDI Go library's sources ({LIBRARY})")
    try:
        import vmdev_cdi  # noqa: F401
    except ImportError:
        problems.append("vmdev-cdi is not installed: pip install ./core ./plugins/cdi")
    return "\n".join(f"  - {p}" for p in problems) or None


_PROBLEM = _prerequisites()
if _PROBLEM:
    pytest.fail(
        f"The CDI Go writer test cannot run on this machine:\n{_PROBLEM}\n"
        f"Fix: as root, apt-get update && apt-get install -y --no-install-recommends {PACKAGES} "
        "(or scripts/install-test-deps)",
        pytrace=False,
    )

from vmdev_cdi import Registry  # noqa: E402
from vmdev_cdi.spec import parse_spec  # noqa: E402


def _run_go_writer(tmp_path: Path) -> Path:
    """Build the program (offline, GOPATH mode, cache under tmp_path) and let it write the spec."""
    env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "off", "GOENV": "off", "GOFLAGS": "",
           "GOPATH": GOPATH, "GOCACHE": str(tmp_path / "gocache")}
    binary, out = tmp_path / "gowriter", tmp_path / "go"
    for argv, cwd in ((["go", "build", "-o", str(binary), "."], PROGRAM), ([str(binary), str(out)], tmp_path)):
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}):\n{done.stderr}"
    assert done.stdout.strip() == str(out / NAME)
    return out / NAME


def test_the_go_library_writes_the_vendored_file_and_vmdev_cdi_writes_the_same(tmp_path: Path) -> None:
    written = _run_go_writer(tmp_path)
    go_bytes = written.read_bytes()
    assert go_bytes == VENDORED.read_bytes(), (
        f"{VENDORED} is not what the Go library writes; regenerate it (plugins/cdi/tests/gowriter/README.md)")
    doc = parse_spec(go_bytes)
    assert doc is not None
    ours = Path(Registry([str(tmp_path / "vmdev")]).write_spec(doc, NAME))
    assert ours.read_bytes() == go_bytes
    assert stat.S_IMODE(ours.stat().st_mode) == stat.S_IMODE(written.stat().st_mode) == 0o600
