"""The quantize plugin (see README.md)."""
