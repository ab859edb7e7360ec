"""Real-world inputs for vmdev (issue 10): Kata's shipped configuration files, rendered by Kata's own
Makefiles, and OCI runtime specs written by real container engines on the machine under test.

``kata``: render the ``configuration-*.toml.in`` templates as Kata's release build does (committed
as data under ``tests/realworld/kata``). ``engines``: write specs with podman, runc, crun and
containerd's ``ctr`` for real host devices. ``causes``: why a combination is refused today.
``checks``: the QEMU pre-flight and the Cloud Hypervisor / Firecracker API schema checks.
"""
