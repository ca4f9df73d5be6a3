"""glasschat's widgets, one per module."""
