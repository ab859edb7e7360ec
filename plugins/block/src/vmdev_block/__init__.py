"""vmdev-block: disks and persistent memory for the sandbox VM (entry point ``vmdev_block.plugin``)."""
