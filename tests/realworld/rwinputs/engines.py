"""OCI runtime specs written by real container engines for real host devices, on this machine.

Nothing is installed here: :func:`missing_prerequisites` names the Debian packages to install.
Every engine runs offline and in private state directories (podman's and containerd's stores
live under the output directory and are removed with it):

* ``runc spec`` / ``crun spec`` (also ``--rootless``) and ``ctr oci spec``: the engines' default
  specs, no devices;
* ``ctr``: a private ``containerd`` daemon; ``ctr container create --rootfs DIR`` with
  ``--device`` (ctr always grants ``rwm``) or ``--privileged``; the spec is ``ctr container info
  --spec``;
* ``podman``: a local image made by ``podman import`` of a one-file tarball (no registry);
  ``podman create --device ...`` then ``podman init``, which writes the bundle's config.json
  (``podman inspect --format {{.OCIConfigPath}}``). ``--network none`` keeps podman away from the
  host's networks; runc is the OCI runtime because crun refuses hosts with hybrid cgroups, and
  the ulimits are explicit because podman's default (nofile 1048576) needs CAP_SYS_RESOURCE
  inside containers: both only change ``process`` and state, never the devices.

Host devices: ``/dev/fuse``, ``/dev/net/tun`` and a loop device attached to a sparse file
(``losetup --find --show``), each read-write and read-only (podman's ``:r``), and every host
device (``--privileged``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

#: command -> Debian package
TOOLS: Final = {
    "podman": "podman",
    "runc": "runc",
    "crun": "crun",
    "ctr": "containerd",
    "containerd": "containerd",
    "losetup": "mount",
    "truncate": "coreutils",
}
PACKAGES: Final = ("podman", "runc", "crun", "containerd")
INSTALL_LINE: Final = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
IMAGE: Final = "localhost/vmdev-realworld:latest"
#: every spec :func:`generate` writes, in order (the tests parametrize over these names)
SPEC_NAMES: Final = (
    "runc-spec", "runc-spec-rootless", "crun-spec", "crun-spec-rootless", "ctr-oci-spec",
    "ctr-devices", "ctr-privileged",
    "podman-fuse", "podman-tun", "podman-loop", "podman-ro", "podman-renamed", "podman-privileged",
)
LOOP_MIB: Final = 64
_TIMEOUT: Final = 60.0


class EngineError(RuntimeError):
    """An engine failed to write a spec (with its command and output)."""


def missing_prerequisites() -> str | None:
    """None when specs can be written here, else one paragraph saying what to do."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (podman and containerd create containers, losetup attaches "
                        "a loop device)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        problems.append(f"missing Debian packages: {' '.join(missing)}; install them with: "
                        f"{INSTALL_LINE if set(missing) <= set(PACKAGES) else 'apt-get install -y ' + ' '.join(missing)}")
    for node in ("/dev/fuse", "/dev/net/tun", "/dev/loop-control"):
        if not os.path.exists(node):
            problems.append(f"{node} does not exist on this host")
    return "; ".join(problems) or None


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=_TIMEOUT, check=False,
                          env=env, cwd=cwd)
    if done.returncode != 0:
        raise EngineError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@attrs.frozen
class EngineSpec:
    """One spec: its name, the engine and the command line that wrote it, and where it is."""

    name: str
    engine: str
    command: str
    path: Path

    def load(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return data


# --- host devices -------------------------------------------------------------------------------
@attrs.frozen
class HostDevices:
    """The host devices the specs ask for; ``loop`` is attached to a sparse file by :meth:`create`."""

    fuse: str
    tun: str
    loop: str
    backing: Path

    @classmethod
    @contextlib.contextmanager
    def create(cls, workdir: Path) -> Iterator[HostDevices]:
        workdir.mkdir(parents=True, exist_ok=True)
        backing = workdir / "loop-backing.img"
        run(["truncate", "-s", f"{LOOP_MIB}M", str(backing)])
        loop = run(["losetup", "--find", "--show", str(backing)]).strip()
        try:
            yield cls("/dev/fuse", "/dev/net/tun", loop, backing)
        finally:
            subprocess.run(["losetup", "--detach", loop], capture_output=True, check=False)


def _rootfs(workdir: Path) -> tuple[Path, Path]:
    """A one-file root filesystem (an empty executable ``/true``: runtimes stat the command at
    create time and nothing is started) as a directory and as a tarball."""
    root = workdir / "rootfs"
    root.mkdir(parents=True, exist_ok=True)
    (root / "true").write_bytes(b"")
    (root / "true").chmod(0o755)
    tarball = workdir / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("true")
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(b""))
    return root, tarball


# --- runc, crun, ctr oci spec --------------------------------------------------------------------
def _default_spec(out: Path, name: str, argv: list[str]) -> EngineSpec:
    bundle = out / "bundles" / name
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").unlink(missing_ok=True)
    run(argv, cwd=bundle)
    target = out / f"{name}.json"
    shutil.copyfile(bundle / "config.json", target)
    return EngineSpec(name, argv[0], " ".join(argv), target)


def default_specs(out: Path) -> list[EngineSpec]:
    specs = [
        _default_spec(out, "runc-spec", ["runc", "spec"]),
        _default_spec(out, "runc-spec-rootless", ["runc", "spec", "--rootless"]),
        _default_spec(out, "crun-spec", ["crun", "spec"]),
        _default_spec(out, "crun-spec-rootless", ["crun", "spec", "--rootless"]),
    ]
    target = out / "ctr-oci-spec.json"
    target.write_text(run(["ctr", "oci", "spec"]), encoding="utf-8")
    specs.append(EngineSpec("ctr-oci-spec", "ctr", "ctr oci spec", target))
    return specs


# --- containerd's ctr ----------------------------------------------------------------------------
class Containerd:
    """A private containerd daemon (state under ``workdir``) and ``ctr`` against it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{workdir / "root"}"\n'
            f'state = "{workdir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n',
            encoding="utf-8",
        )
        self._log = (workdir / "containerd.log").open("wb")
        self._proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=self._log,
                                      stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EngineError(f"containerd exited ({self._proc.returncode}): "
                                  f"{(self.workdir / 'containerd.log').read_text(errors='replace')[-2000:]}")
            if self.socket.exists():
                done = subprocess.run(self._ctr("version"), capture_output=True, check=False)
                if done.returncode == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise EngineError("containerd did not answer on its socket within 20 s")

    def _ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", "vmdev-realworld", *args]

    def spec(self, rootfs: Path, name: str, flags: Sequence[str]) -> tuple[str, str]:
        """(the command, the spec JSON) of a container created with ``flags``."""
        create = self._ctr("container", "create", "--rootfs", *flags, str(rootfs), name, "/true")
        run(create)
        text = run(self._ctr("container", "info", "--spec", name))
        run(self._ctr("container", "delete", name))
        shown = ["ctr", "container", "create", "--rootfs", *flags, "ROOTFS", name, "/true"]
        return " ".join(shown), text

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def ctr_specs(out: Path, host: HostDevices, rootfs: Path) -> list[EngineSpec]:
    variants = {
        "ctr-devices": ["--device", host.fuse, "--device", host.tun, "--device", host.loop],
        "ctr-privileged": ["--privileged"],
    }
    daemon = Containerd(out / "containerd")
    try:
        specs = []
        for name, flags in variants.items():
            command, text = daemon.spec(rootfs, name, flags)
            target = out / f"{name}.json"
            target.write_text(text, encoding="utf-8")
            specs.append(EngineSpec(name, "ctr", command, target))
        return specs
    finally:
        daemon.stop()


# --- podman --------------------------------------------------------------------------------------
class Podman:
    """podman with private storage, state, tmp and network directories in a new directory under
    /tmp (podman refuses a run root longer than 50 characters), removed by :meth:`cleanup`."""

    FLAGS: Final = ("--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

    def __init__(self) -> None:
        self.workdir = workdir = Path(tempfile.mkdtemp(prefix="vmdev-rw-podman-", dir="/tmp"))
        for sub in ("root", "runroot", "tmp", "networks"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.base = [
            "podman", "--root", str(workdir / "root"), "--runroot", str(workdir / "runroot"),
            "--tmpdir", str(workdir / "tmp"), "--network-config-dir", str(workdir / "networks"),
            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", "runc",
        ]

    def load_image(self, tarball: Path) -> None:
        run([*self.base, "import", "--quiet", str(tarball), IMAGE])

    def spec(self, name: str, flags: Sequence[str]) -> tuple[str, str]:
        """(the command, the config.json ``podman init`` wrote) of a container created with ``flags``.

        The container stays (until :meth:`cleanup`): its spec bind-mounts files of its bundle
        (``/etc/hostname``, ``/dev/shm``...) that exist only as long as it does."""
        run([*self.base, "create", "--quiet", "--name", name, *self.FLAGS, *flags, IMAGE, "/true"])
        run([*self.base, "init", name])
        path = run([*self.base, "inspect", "--format", "{{.OCIConfigPath}}", name]).strip()
        text = Path(path).read_text(encoding="utf-8")
        return " ".join(["podman", "create", *self.FLAGS, *flags, IMAGE, "/true"]), text

    def cleanup(self) -> None:
        subprocess.run([*self.base, "rm", "--all", "--force"], capture_output=True, check=False)
        subprocess.run([*self.base, "rmi", "--all", "--force"], capture_output=True, check=False)
        # conmon runs podman's exit command (container cleanup) on its own after `rm`; it would
        # write the store's lock files again behind rmtree: wait for every process naming our
        # directories to end
        _wait_for_processes_naming(self.workdir, timeout=20)
        for attempt in range(3):
            # whatever podman left mounted under its directories (the overlay driver's own mount
            # of its store, a container's shm) must go before the files, deepest first
            for mountpoint in sorted(_mounts_under(self.workdir), key=len, reverse=True):
                subprocess.run(["umount", "--lazy", mountpoint], capture_output=True, check=False)
            shutil.rmtree(self.workdir, ignore_errors=True)
            if not self.workdir.exists():
                return
            time.sleep(0.2 * (attempt + 1))


def _processes_naming(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(directory).encode() in cmdline:
            found.append(int(entry.name))
    return found


def _wait_for_processes_naming(directory: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _processes_naming(directory) and time.monotonic() < deadline:
        time.sleep(0.05)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return [p for p in points if p.startswith(prefix) or p == str(directory)]


def podman_variants(host: HostDevices) -> dict[str, list[str]]:
    return {
        "podman-fuse": ["--device", host.fuse],
        "podman-tun": ["--device", host.tun],
        "podman-loop": ["--device", host.loop],
        "podman-ro": ["--device", f"{host.fuse}:r", "--device", f"{host.tun}:r", "--device", f"{host.loop}:r"],
        "podman-renamed": ["--device", f"{host.loop}:/dev/xvdb", "--device", f"{host.fuse}:/dev/fuse0:rw"],
        "podman-privileged": ["--privileged"],
    }


def podman_specs(podman: Podman, out: Path, host: HostDevices, tarball: Path) -> list[EngineSpec]:
    podman.load_image(tarball)
    specs = []
    for name, flags in podman_variants(host).items():
        command, text = podman.spec(name, flags)
        target = out / f"{name}.json"
        target.write_text(text, encoding="utf-8")
        specs.append(EngineSpec(name, "podman", command, target))
    return specs


@contextlib.contextmanager
def generate(out: Path) -> Iterator[tuple[HostDevices, list[EngineSpec]]]:
    """Every engine's specs in ``out`` (``<name>.json``, indexed in ``specs.json``), valid until the
    context ends: then podman's containers are removed and the loop device is detached."""
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(HostDevices.create(out / "host"))
        rootfs, tarball = _rootfs(out / "image")
        specs = default_specs(out) + ctr_specs(out, host, rootfs)
        podman = Podman()
        stack.callback(podman.cleanup)
        specs += podman_specs(podman, out, host, tarball)
        if tuple(s.name for s in specs) != SPEC_NAMES:
            raise EngineError(f"wrote {[s.name for s in specs]}, expected {list(SPEC_NAMES)}")
        index = [{"name": s.name, "engine": s.engine, "command": s.command, "file": s.path.name} for s in specs]
        (out / "specs.json").write_text(json.dumps({"loop": host.loop, "specs": index}, indent=1) + "\n",
                                        encoding="utf-8")
        yield host, specs
