"""GPU and CPU facts for gpuforge: profiles (TOML), pricing, detection, CPU measurement.

Nothing is imported here so that ``import gpuforge.hardware.profiles`` stays light.
"""
