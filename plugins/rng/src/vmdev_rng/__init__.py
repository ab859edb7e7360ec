"""vmdev-rng: the sandbox entropy device plugin (entry point ``vmdev_rng.plugin``)."""
