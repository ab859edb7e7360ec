"""The built-in hypervisor backends: QEMU, Cloud Hypervisor and Firecracker.

Each module is a plugin registered by the core like its defaults (``vmdev.backend.qemu``, ...) and
adds its backend through the ``register_backends`` hook, exactly as a separately installed backend
does. Disabling one (``VMDEV_DISABLE_PLUGINS=vmdev.backend.firecracker``) removes that hypervisor.
"""
