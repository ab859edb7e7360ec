"""Kata Containers' shipped configuration files: rendering (by Kata's own Makefiles) and the corpus.

Kata does not ship ``configuration-*.toml`` in its repository: its release build
(``tools/packaging/static-build/shim-v2/build.sh``) renders the ``*.toml.in`` templates with
``make PREFIX=/opt/kata QEMUCMD=qemu-system-<arch>`` in ``src/runtime`` (the Go runtime) and
``src/runtime-rs``, each Makefile substituting ``@VAR@`` with ``sed`` from its variables and
``arch/<arch>-options.mk``. :func:`render` runs exactly those Makefiles (GNU make, sed and git are
all it needs: no Go or Rust toolchain) for every configuration file the Makefile builds for the
architecture, so the result is byte for byte what the release puts in
``/opt/kata/share/defaults/kata-containers/``. Only the dm-verity root hashes
(``KERNELVERITYPARAMS*``, ``COCOVERITYPARAMS``), which the release reads from images it has just
built, stay at the Makefiles' defaults (empty).

The rendered files are committed under ``tests/realworld/kata/<flavour>/<arch>/`` with Kata's
LICENSE, an ORIGIN file and ``MANIFEST.json`` (each file's hypervisor section and sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

KATA_URL: Final = "https://github.com/kata-containers/kata-containers"
KATA_REF: Final = "4.1.0"
CORPUS: Final = Path(__file__).resolve().parent.parent / "kata"
RELEASE_PREFIX: Final = "/opt/kata"


@attrs.frozen
class Build:
    """One Makefile run: a runtime flavour for one architecture."""

    flavour: str  # directory name in the corpus: "go" or "runtime-rs"
    srcdir: str  # the Makefile's directory in the Kata tree
    arch: str  # directory name in the corpus (Debian/Go name)
    make_arch: str  # the ARCH the Makefile gets on a release builder of that architecture
    uname: str  # what `uname -m` says on that architecture (the release's QEMUCMD suffix)

    def make_vars(self) -> list[str]:
        """The release's variables (build.sh: ``make PREFIX=${PREFIX} QEMUCMD=qemu-system-${arch}``).

        ARCH is what the release builder's Makefile ends up with: the Go runtime's Makefile takes
        ``uname -m`` (its builder image sets no GOPATH, so golang.mk does not ask ``go env``) and
        maps x86_64 to amd64 *and* sets EDK2_NAME=ovmf (firmware paths); runtime-rs gets the
        ``uname -m`` name through kata-deploy's ARCH."""
        return [f"ARCH={self.make_arch}", f"PREFIX={RELEASE_PREFIX}", f"QEMUCMD=qemu-system-{self.uname}"]


BUILDS: Final = (
    Build("go", "src/runtime", "amd64", "x86_64", "x86_64"),
    Build("go", "src/runtime", "s390x", "s390x", "s390x"),
    Build("runtime-rs", "src/runtime-rs", "amd64", "x86_64", "x86_64"),
    Build("runtime-rs", "src/runtime-rs", "s390x", "s390x", "s390x"),
)

_PRINT_CONFIGS = "print-vmdev-configs:\n\t@echo $(CONFIGS)\n"


@attrs.frozen
class KataConfig:
    """One rendered configuration file of the corpus."""

    flavour: str
    arch: str
    name: str
    hypervisor: str  # the X of its [hypervisor.X] section
    sha256: str

    @property
    def path(self) -> Path:
        return CORPUS / self.flavour / self.arch / self.name

    @property
    def key(self) -> str:
        return f"{self.flavour}/{self.arch}/{self.name}"


# --- rendering (scripts/gen-realworld-inputs kata) ----------------------------------------------
def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C"}
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def checkout(repo: str, ref: str, dest: Path) -> str:
    """A sparse checkout of ``ref`` (the two runtimes' directories) in ``dest``; returns the commit."""
    local = Path(repo).is_dir()
    clone = ["git", "clone", "-q", "--no-checkout"]
    clone += ["--shared"] if local else ["--filter=blob:none"]
    _run([*clone, repo, str(dest)])
    _run(["git", "-C", str(dest), "sparse-checkout", "set", "src/runtime", "src/runtime-rs"])
    _run(["git", "-C", str(dest), "checkout", "-q", ref])
    return _run(["git", "-C", str(dest), "rev-parse", "HEAD"]).strip()


def _configs(tree: Path, build: Build, helper: Path) -> list[str]:
    out = _run(["make", "-s", "-C", str(tree / build.srcdir), "-f", "Makefile", "-f", str(helper),
                *build.make_vars(), "print-vmdev-configs"])
    return [word for word in out.split() if word.startswith("config/")]


def render_build(tree: Path, build: Build, dest: Path) -> list[str]:
    """Render every configuration file ``build``'s Makefile builds; copy them into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        helper = Path(tmp) / "print.mk"
        helper.write_text(_PRINT_CONFIGS)
        targets = _configs(tree, build, helper)
    if not targets:
        raise RuntimeError(f"{build.srcdir} builds no configuration file for ARCH={build.make_arch}")
    # -B: the same tree renders several architectures; never reuse another one's output
    _run(["make", "-s", "-B", "-C", str(tree / build.srcdir), *build.make_vars(), *targets])
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for target in targets:
        source = tree / build.srcdir / target
        shutil.copyfile(source, dest / source.name)
        names.append(source.name)
    return sorted(names)


def hypervisor_of(path: Path) -> str:
    tables = tomllib.loads(path.read_text(encoding="utf-8")).get("hypervisor", {})
    if len(tables) != 1:
        raise RuntimeError(f"{path}: expected one [hypervisor.X] section, found {sorted(tables)}")
    (name,) = tables
    return str(name)


def render(repo: str, ref: str, out: Path, command: str) -> list[KataConfig]:
    """Render the whole corpus into ``out`` (replacing it) and write LICENSE, ORIGIN, MANIFEST."""
    with tempfile.TemporaryDirectory(prefix="kata-src-") as tmp:
        tree = Path(tmp) / "kata"
        commit = checkout(repo, ref, tree)
        if out.exists():
            shutil.rmtree(out)
        entries = []
        for build in BUILDS:
            for name in render_build(tree, build, out / build.flavour / build.arch):
                path = out / build.flavour / build.arch / name
                entries.append(KataConfig(build.flavour, build.arch, name, hypervisor_of(path),
                                          hashlib.sha256(path.read_bytes()).hexdigest()))
        shutil.copyfile(tree / "LICENSE", out / "LICENSE")
    (out / "ORIGIN").write_text(_origin(ref, commit, command), encoding="utf-8")
    manifest = {"repository": KATA_URL, "ref": ref, "commit": commit,
                "files": [attrs.asdict(e) for e in entries]}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return entries


def _origin(ref: str, commit: str, command: str) -> str:
    lines = [
        "Kata Containers configuration files, rendered by Kata's own Makefiles.",
        "",
        f"Repository: {KATA_URL}",
        f"Tag:        {ref}",
        f"Commit:     {commit}",
        "Licence:    Apache-2.0 (LICENSE, copied from the repository at that commit)",
        f"Renderer:   {command}",
        "",
        "Each <flavour>/<arch>/ directory holds every configuration file that Makefile builds for that",
        "architecture, as Kata's release build (tools/packaging/static-build/shim-v2/build.sh) makes it:",
        "",
    ]
    for build in BUILDS:
        lines.append(f"  {build.flavour}/{build.arch}: make -C {build.srcdir} {' '.join(build.make_vars())} "
                     "<every config/*.toml in $(CONFIGS)>")
    lines += [
        "",
        "The dm-verity root hashes (KERNELVERITYPARAMS*, COCOVERITYPARAMS), which the release reads from",
        "the images it has just built, keep the Makefiles' defaults (empty). MANIFEST.json lists each",
        "file with the hypervisor its [hypervisor.X] section configures and its sha256.",
        "",
    ]
    return "\n".join(lines)


# --- the committed corpus (the tests) ------------------------------------------------------------
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / "MANIFEST.json").read_text(encoding="utf-8"))
    return data


def corpus() -> list[KataConfig]:
    return [KataConfig(**entry) for entry in manifest()["files"]]


def iter_by_hypervisor(configs: Sequence[KataConfig]) -> Iterator[tuple[str, list[KataConfig]]]:
    for name in sorted({c.hypervisor for c in configs}):
        yield name, [c for c in configs if c.hypervisor == name]
