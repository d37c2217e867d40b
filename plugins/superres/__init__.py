"""The superres plugin (see README.md)."""
