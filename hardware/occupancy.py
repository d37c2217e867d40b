"""Theoretical occupancy: how many thread blocks of a kernel one SM holds at once.

The same arithmetic as CUDA's occupancy calculator (``cuda_occupancy.h``,
``cudaOccMaxActiveBlocksPerMultiprocessor``), fed with a GPU profile's per-SM limits and
a compiled kernel's registers per thread and shared memory per block. Four resources
cap the blocks per SM; the smallest cap wins and names the limiting resource:

- warps: ``max_threads_per_sm / 32`` warp slots, ``ceil(threads / 32)`` per block;
- blocks: ``max_blocks_per_sm``;
- registers: allocated per warp in units of 256 (``regs x 32`` rounded up), inside each of
  the SM's 4 sub-partitions (``registers_per_sm / 4`` each); a block whose warps need more
  than ``registers_per_block`` cannot launch at all;
- shared memory: static + dynamic + the driver's reserve per block (1 KiB from cc 8.0),
  rounded up to 128 bytes (256 before cc 8.0), out of ``shared_mem_per_sm``.

Hopper's block-barrier limit (64 barriers per SM) never binds for kernels that use
``syncthreads`` only (one barrier per block, 32 blocks at most), so it is left out.
Pure arithmetic: no CUDA, no numba; the tests check it against hand-computed cases.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

WARP = 32
REG_ALLOC_UNIT = 256          # registers per warp are allocated in these units (cc 3-12)
MAX_REGS_PER_THREAD = 255     # what ptxas assigns at most (the hardware field allows 256)
SUB_PARTITIONS = 4            # warp schedulers per SM, each with its own register file (cc >= 7)
LOW_OCCUPANCY = 0.25          # below this a memory-bound kernel rarely hides latency


def smem_alloc_unit(cc: tuple[int, int]) -> int:
    """Granularity of shared-memory allocation per block (``cudaOccSMemAllocationGranularity``)."""
    return 256 if cc[0] < 8 else 128


def smem_reserved_per_block(cc: tuple[int, int]) -> int:
    """Shared memory the driver keeps per block for itself, from Ampere on."""
    return 0 if cc[0] < 8 else 1024


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


@dataclass(frozen=True)
class Occupancy:
    """Blocks and warps of one kernel resident on one SM at a launch configuration."""

    threads_per_block: int
    warps_per_block: int
    blocks_per_sm: int
    """Resident blocks per SM: the minimum of the four limits below."""
    warps_per_sm: int
    max_warps_per_sm: int
    occupancy: float
    """``warps_per_sm / max_warps_per_sm``, 0..1."""
    limited_by: str
    """``warps``, ``blocks``, ``registers`` or ``shared memory`` (joined by ``+`` on a tie);
    ``cannot launch: ...`` when a single block does not fit."""
    limit_warps: int
    limit_blocks: int
    limit_registers: int | None
    """Blocks per SM each resource allows (None: the kernel uses none of it)."""
    limit_shared: int | None
    registers_per_block: int
    """Registers allocated to one block (per-warp rounding included)."""
    shared_bytes_per_block: int
    """Shared memory allocated to one block (reserve and rounding included)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def occupancy(profile: Any, threads_per_block: int, registers_per_thread: int,
              shared_bytes: int = 0, dynamic_shared_bytes: int = 0) -> Occupancy:
    """Theoretical occupancy of a kernel on ``profile`` (a :class:`GpuProfile` or anything
    with its per-SM fields and ``cc``) at ``threads_per_block``."""
    if threads_per_block <= 0:
        raise ValueError(f"threads_per_block must be positive, got {threads_per_block}")
    cc = profile.cc
    warp = getattr(profile, "warp_size", WARP)
    max_warps = profile.max_threads_per_sm // warp
    warps = -(-threads_per_block // warp)

    # Warp slots and block slots.
    limit_warps = max_warps // warps if threads_per_block <= profile.max_threads_per_block else 0
    limit_blocks = profile.max_blocks_per_sm

    # Registers: per warp, rounded to the allocation unit, per sub-partition.
    regs_per_warp = _round_up(registers_per_thread * warp, REG_ALLOC_UNIT)
    regs_per_block = regs_per_warp * warps
    # The hardware check assumes the block's warps spread over all sub-partitions.
    regs_assumed = regs_per_warp * _round_up(warps, SUB_PARTITIONS)
    if (registers_per_thread > MAX_REGS_PER_THREAD or regs_per_block > profile.registers_per_block
            or regs_assumed > profile.registers_per_block):
        limit_regs = 0
    elif regs_per_warp == 0:
        limit_regs = None
    else:
        warps_per_part = (profile.registers_per_sm // SUB_PARTITIONS) // regs_per_warp
        limit_regs = warps_per_part * SUB_PARTITIONS // warps

    # Shared memory: static + dynamic + the driver's reserve, rounded up.
    smem = _round_up(shared_bytes + dynamic_shared_bytes + smem_reserved_per_block(cc), smem_alloc_unit(cc))
    per_block_limit = profile.shared_mem_per_block_kib * 1024 + smem_reserved_per_block(cc)
    if smem > per_block_limit:
        limit_smem = 0
    elif smem == 0:
        limit_smem = None
    else:
        limit_smem = profile.shared_mem_per_sm_kib * 1024 // smem

    limits = {"warps": limit_warps, "blocks": limit_blocks, "registers": limit_regs, "shared memory": limit_smem}
    blocks = min(v for v in limits.values() if v is not None)
    if blocks == 0:
        why = {"warps": f"{threads_per_block} threads per block exceed {profile.max_threads_per_block}",
               "registers": f"{regs_per_block} registers per block exceed {profile.registers_per_block}"
                            if registers_per_thread <= MAX_REGS_PER_THREAD
                            else f"{registers_per_thread} registers per thread exceed {MAX_REGS_PER_THREAD}",
               "shared memory": f"{smem} bytes of shared memory per block exceed {per_block_limit}"}
        limited = "cannot launch: " + "; ".join(why[k] for k, v in limits.items() if v == 0)
    else:
        limited = "+".join(k for k, v in limits.items() if v == blocks)
    return Occupancy(
        threads_per_block=threads_per_block, warps_per_block=warps, blocks_per_sm=blocks,
        warps_per_sm=blocks * warps, max_warps_per_sm=max_warps, occupancy=blocks * warps / max_warps,
        limited_by=limited, limit_warps=limit_warps, limit_blocks=limit_blocks,
        limit_registers=limit_regs, limit_shared=limit_smem,
        registers_per_block=regs_per_block, shared_bytes_per_block=smem)
