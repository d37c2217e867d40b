"""The fraud plugin (see README.md)."""
