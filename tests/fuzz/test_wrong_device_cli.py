"""Issue 11's two wrong devices, refused by the real command line with one line on stderr.

``{"path": "/etc/shadow", "type": "b", "major": 259, "minor": 99}`` used to become
``file.filename=/etc/shadow,read-only=off``, and ``/dev/vda`` asked for as 250:7 the host's root
disk (254:0). The sysfs root is an empty directory (no such block device exists), the rest is the
real host: whatever file sits at the container path must not be attached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from vmdev_fuzz.oracles import line_problem


def vmdev_plan(tmp_path: Path, device: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {"devices": [device]}}), encoding="utf-8")
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMDEV_")}
    return subprocess.run([sys.executable, "-m", "vmdev", "plan", "--format", "json", "--sysfs-root", str(sysfs),
                           "--block-driver", "virtio-blk", str(config)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize("device", [
    {"path": "/etc/shadow", "type": "b", "major": 259, "minor": 99},
    {"path": "/dev/vda", "type": "b", "major": 250, "minor": 7},
], ids=["etc-shadow-as-259:99", "dev-vda-as-250:7"])
def test_a_block_request_without_its_device_is_refused_in_one_line(tmp_path: Path, device: dict[str, Any]) -> None:
    done = vmdev_plan(tmp_path, device)
    assert done.returncode == 1, done.stdout[:500]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and line_problem(lines[0]) is None, done.stderr
    assert lines[0].startswith(f"vmdev: error: {device['path']}: major:minor: ")
    assert f"{device['major']}:{device['minor']}" in lines[0]
