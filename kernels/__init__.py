"""Kernel primitives shared by several plugins: blockwise absmax and int8 quantization,
bit packing (bitsandbytes and GPTQ layouts), and tiled pairwise top-k distances.

Each kernel has a NumPy reference (the specification), a Numba CPU backend and a Numba
CUDA backend with the same signature. The registry learns about them from
:func:`gpuforge.kernels.specs.kernel_specs`.

This package imports nothing on purpose: the CLI reads kernel metadata without
loading NumPy, Numba or CUDA.
"""
