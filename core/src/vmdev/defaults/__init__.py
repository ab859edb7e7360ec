"""The core's own behaviour, registered as plugins through the normal hooks (``trylast``)."""
