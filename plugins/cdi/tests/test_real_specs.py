"""Real spec files: what ``nvidia-ctk cdi generate`` writes (GPU, IMEX channels, management mode,
from NVIDIA Container Toolkit's test expectations), a DRA driver's metadata spec, and the Go
writer's compact JSON; loaded, injected and written back byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from vmdev_cdi import Registry, read_spec
from vmdev_cdi.spec import encode_spec
from vmdev_cdi.testing import FakeStat

DATA = Path(__file__).parent / "data"
DRA_SPEC = "gpu.example.com_metadata_2f6b1a3c-9d8e-4f5a-b7c6-0d1e2f3a4b5c_gpu.json"
LIBCUDA = "/lib/x86_64-linux-gnu/libcuda.so.999.88.77"
VDPAU = "/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.999.88.77"
RO_BIND = ["ro", "nosuid", "nodev", "rbind", "rprivate"]


@pytest.fixture
def host() -> FakeStat:
    stat = FakeStat()
    stat.add("/driver-root/dev/nvidia0", "c", 195, 0)
    stat.add("/driver-root/dev/nvidiactl", "c", 195, 255)
    for channel in (0, 1, 2047):
        stat.add(f"/driver-root/dev/nvidia-caps-imex-channels/channel{channel}", "c", 234, channel, 0o600)
    stat.add("/driver-root/dev/nvidia-caps/nvidia-cap1", "c", 236, 1, 0o400)
    stat.add("/dev/vfio/12", "c", 244, 12, 0o600)
    stat.add("/dev/loop7", "b", 7, 7, 0o660)
    return stat


@pytest.fixture
def cdi_dirs(tmp_path: Path) -> list[str]:
    etc, run = tmp_path / "etc" / "cdi", tmp_path / "var" / "run" / "cdi"
    etc.mkdir(parents=True)
    run.mkdir(parents=True)
    for name in ("nvidia-gpu.yaml", "nvidia-imex-channel.yaml", "go-writer-vfio.json"):
        shutil.copy(DATA / name, etc / name)
    shutil.copy(DATA / DRA_SPEC, run / DRA_SPEC)
    return [str(etc), str(run)]


@pytest.mark.parametrize("name", ["nvidia-gpu.yaml", "nvidia-imex-channel.yaml", "nvidia-management.yaml", "go-writer-vfio.json"])
def test_the_go_writer_s_output_is_reproduced_byte_for_byte(name: str) -> None:
    spec = read_spec(str(DATA / name), 0)
    assert encode_spec(spec.raw, name) == (DATA / name).read_bytes()  # JSON as json.Marshal: no newline


def test_every_device_of_the_real_files_is_listed_with_its_file(cdi_dirs: list[str]) -> None:
    registry = Registry(cdi_dirs)
    assert registry.errors == {}
    assert registry.list_devices() == [
        "gpu.example.com/metadata=2f6b1a3c-9d8e-4f5a-b7c6-0d1e2f3a4b5c_gpu",
        "nvidia.com/gpu=0", "nvidia.com/gpu=all",
        "nvidia.com/imex-channel=0", "nvidia.com/imex-channel=1", "nvidia.com/imex-channel=2047",
        "vendor.example/vfio=12", "vendor.example/vfio=disk",
    ]
    assert registry.list_vendors() == ["gpu.example.com", "nvidia.com", "vendor.example"]
    gpu = registry.get_device("nvidia.com/gpu=0")
    assert gpu is not None and gpu.spec.path.endswith("etc/cdi/nvidia-gpu.yaml") and gpu.spec.priority == 0
    dra = registry.get_device("gpu.example.com/metadata=2f6b1a3c-9d8e-4f5a-b7c6-0d1e2f3a4b5c_gpu")
    assert dra is not None and dra.spec.priority == 1


def test_a_gpu_and_an_imex_channel_inject_as_containerd_would(cdi_dirs: list[str], host: FakeStat) -> None:
    oci: dict[str, Any] = {"ociVersion": "1.1.0", "process": {"env": ["PATH=/usr/bin"], "user": {"uid": 0, "gid": 0}},
                           "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}]}
    Registry(cdi_dirs, stat=host).inject_devices(oci, ["nvidia.com/gpu=0", "nvidia.com/imex-channel=1"])
    assert oci["process"]["env"] == ["PATH=/usr/bin", "NVIDIA_CTK_LIBCUDA_DIR=/lib/x86_64-linux-gnu",
                                     "NVIDIA_VISIBLE_DEVICES=void"]
    assert oci["linux"]["devices"] == [
        {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255, "fileMode": 0o666},
        {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0, "fileMode": 0o666},
        {"path": "/dev/nvidia-caps-imex-channels/channel1", "type": "c", "major": 234, "minor": 1, "fileMode": 0o600},
    ]
    assert [(r["major"], r["minor"], r["access"]) for r in oci["linux"]["resources"]["devices"]] == [
        (195, 255, "rwm"), (195, 0, "rwm"), (234, 1, "rwm")]
    assert oci["mounts"] == [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": LIBCUDA, "source": "/driver-root" + LIBCUDA, "options": RO_BIND},
        {"destination": VDPAU, "source": "/driver-root" + VDPAU, "options": RO_BIND},
    ]
    assert [h["args"][1] for h in oci["hooks"]["createContainer"]] == [
        "create-symlinks", "enable-cuda-compat", "update-ldcache", "disable-device-node-modification"]
    assert host.calls == ["/driver-root/dev/nvidiactl", "/driver-root/dev/nvidia0",
                          "/driver-root/dev/nvidia-caps-imex-channels/channel1"]


def test_the_dra_metadata_spec_injects_its_read_only_bind_mount(cdi_dirs: list[str], host: FakeStat) -> None:
    oci: dict[str, Any] = {}
    Registry(cdi_dirs, stat=host).inject_devices(oci, ["gpu.example.com/metadata=2f6b1a3c-9d8e-4f5a-b7c6-0d1e2f3a4b5c_gpu"])
    assert oci == {"mounts": [{
        "destination": "/var/run/dra-device-attributes/gpu.example.com/gpu.json",
        "source": "/var/lib/kubelet/plugins/gpu.example.com/metadata/2f6b1a3c-9d8e-4f5a-b7c6-0d1e2f3a4b5c/gpu.json",
        "options": ["ro", "bind"]}]}


def test_the_go_json_spec_injects_a_vfio_group_and_a_block_device(cdi_dirs: list[str], host: FakeStat) -> None:
    oci: dict[str, Any] = {"process": {"user": {"uid": 1000, "gid": 1000, "additionalGids": [1000]}}}
    Registry(cdi_dirs, stat=host).inject_devices(oci, ["vendor.example/vfio=12", "vendor.example/vfio=disk"])
    assert oci["process"] == {"user": {"uid": 1000, "gid": 1000, "additionalGids": [1000]}, "env": ["VENDOR=x&y"]}
    assert oci["linux"]["devices"] == [
        {"path": "/dev/vfio/vfio", "type": "c", "major": 10, "minor": 196, "fileMode": 0o666, "uid": 1000, "gid": 1000},
        {"path": "/dev/vfio/12", "type": "c", "major": 244, "minor": 12, "fileMode": 0o600, "uid": 1000, "gid": 1000},
        {"path": "/dev/xvdb", "type": "b", "major": 7, "minor": 7, "fileMode": 0o660, "uid": 1000, "gid": 1000},
    ]
    assert [r.get("access") for r in oci["linux"]["resources"]["devices"]] == ["rwm", "rw", "rwm"]
    assert host.calls[0] == "/dev/vfio/vfio"  # looked up, absent on this host: fine for a minimal node


def test_the_management_spec_needs_every_node_on_the_host(tmp_path: Path, host: FakeStat) -> None:
    shutil.copy(DATA / "nvidia-management.yaml", tmp_path / "m.yaml")
    oci: dict[str, Any] = {}
    Registry([str(tmp_path)], stat=host).inject_devices(oci, ["example.com/device=all"])
    assert [d["path"] for d in oci["linux"]["devices"]] == [
        "/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-caps-imex-channels/channel0",
        "/dev/nvidia-caps-imex-channels/channel1", "/dev/nvidia-caps-imex-channels/channel2047",
        "/dev/nvidia-caps/nvidia-cap1"]
    assert oci["hooks"]["createContainer"][1]["args"] == ["nvidia-cdi-hook", "chmod", "--mode", "755", "--path", "/dev/nvidia-caps"]
