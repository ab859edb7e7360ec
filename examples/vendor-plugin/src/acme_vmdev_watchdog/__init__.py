"""Example vendor plugin for vmdev (entry point ``acme_vmdev_watchdog.plugin``)."""
