"""The gpuforge command line (typer). ``gpuforge.cli.main:main`` is the entry point."""
