"""vmdev-vfio: VFIO passthrough plugin (entry point ``vmdev_vfio.plugin``)."""
