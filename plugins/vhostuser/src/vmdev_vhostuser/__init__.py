"""vmdev-vhostuser: vhost-user devices (entry point ``vmdev_vhostuser.plugin``)."""
