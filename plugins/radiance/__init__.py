"""The radiance plugin (see README.md)."""
