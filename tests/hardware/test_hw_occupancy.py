"""Theoretical occupancy against cases computed by hand from CUDA's occupancy rules
(cuda_occupancy.h): registers per warp rounded up to 256 inside 4 sub-partitions of
registers_per_sm / 4; shared memory + 1 KiB driver reserve (cc >= 8.0) rounded up to
128 bytes (256 before cc 8.0); warp slots; block slots."""
from __future__ import annotations

import pytest

from gpuforge.hardware.occupancy import occupancy
from gpuforge.hardware.profiles import get_profile


def test_255_registers_x_256_threads_on_cc_9_0():
    # 255 regs x 32 lanes = 8160 -> 8192 per warp (units of 256). One sub-partition holds
    # 65536 / 4 = 16384 registers = 2 such warps; 4 sub-partitions: 8 warps per SM.
    # A block of 256 threads is 8 warps -> 1 block per SM -> 8 of 64 warps = 12.5%.
    occ = occupancy(get_profile("h100-sxm"), 256, 255)
    assert occ.warps_per_block == 8
    assert occ.registers_per_block == 8192 * 8
    assert occ.limit_registers == 1
    assert (occ.blocks_per_sm, occ.warps_per_sm, occ.max_warps_per_sm) == (1, 8, 64)
    assert occ.occupancy == pytest.approx(0.125)
    assert occ.limited_by == "registers"


def test_32_registers_x_256_threads_fills_an_h100():
    # 32 x 32 = 1024 per warp -> 16384 / 1024 = 16 warps per sub-partition, 64 per SM
    # -> 8 blocks of 8 warps; warp slots: 64 / 8 = 8 blocks too; block slots: 32.
    # Shared: 0 + 1024 reserve = 1024 per block -> 233472 / 1024 = 228 blocks.
    occ = occupancy(get_profile("h100-sxm"), 256, 32)
    assert (occ.limit_warps, occ.limit_registers, occ.limit_blocks, occ.limit_shared) == (8, 8, 32, 228)
    assert occ.occupancy == 1.0
    assert occ.limited_by == "warps+registers"


def test_82_registers_x_256_threads_on_cc_9_0_is_a_quarter():
    # 82 x 32 = 2624 -> 2816 per warp; 16384 // 2816 = 5 warps per sub-partition, 20 per
    # SM -> 20 // 8 = 2 blocks -> 16 / 64 = 25% (the rasterizer's backward pass).
    occ = occupancy(get_profile("h100-sxm"), 256, 82)
    assert (occ.blocks_per_sm, occ.occupancy, occ.limited_by) == (2, 0.25, "registers")


def test_shared_memory_limit_on_cc_8_0():
    # A100: 48 KiB static + 1 KiB reserve = 50176 bytes (a multiple of 128) per block;
    # 164 KiB = 167936 per SM -> 3 blocks of 4 warps (128 threads) = 12 / 64 = 18.75%.
    occ = occupancy(get_profile("a100-80gb"), 128, 32, shared_bytes=48 * 1024)
    assert occ.shared_bytes_per_block == 50176
    assert occ.limit_shared == 3
    assert occ.occupancy == pytest.approx(12 / 64)
    assert occ.limited_by == "shared memory"


def test_shared_memory_rounding_and_dynamic_bytes_on_cc_8_9():
    # L4: 1000 static + 3000 dynamic + 1024 reserve = 5024 -> 5120 (40 x 128);
    # 100 KiB = 102400 / 5120 = 20 blocks; block slots 24; warps 48 / 2 = 24 (64 threads);
    # registers 16 x 32 = 512 per warp -> 32 warps per sub-partition -> 64 blocks.
    # -> 20 blocks x 2 warps = 40 of 48 warps.
    occ = occupancy(get_profile("l4"), 64, 16, shared_bytes=1000, dynamic_shared_bytes=3000)
    assert occ.shared_bytes_per_block == 5120
    assert (occ.limit_shared, occ.limit_blocks, occ.limit_warps, occ.limit_registers) == (20, 24, 24, 64)
    assert occ.occupancy == pytest.approx(40 / 48)
    assert occ.limited_by == "shared memory"


def test_block_slots_limit_small_blocks_on_cc_8_9():
    # L4 holds 24 blocks: 32-thread blocks -> 24 warps of 48 = 50%, limited by blocks.
    occ = occupancy(get_profile("l4"), 32, 16)
    assert (occ.blocks_per_sm, occ.occupancy, occ.limited_by) == (24, 0.5, "blocks")


def test_one_full_block_on_cc_8_9():
    # 1024 threads x 64 regs: 2048 per warp x 32 warps = 65536 = the per-block limit (fits);
    # 8 warps per sub-partition -> 32 per SM -> 1 block; warp slots 48 // 32 = 1.
    occ = occupancy(get_profile("l4"), 1024, 64)
    assert (occ.blocks_per_sm, occ.warps_per_sm) == (1, 32)
    assert occ.occupancy == pytest.approx(32 / 48)
    assert occ.limited_by == "warps+registers"


def test_turing_has_no_reserve_and_256_byte_granularity():
    # T4 (cc 7.5): 100 bytes static -> 256 per block; 65536 / 256 = 256 blocks; block
    # slots 16; 64 threads -> warps 32 / 2 = 16 -> 16 blocks x 2 warps = 100%.
    occ = occupancy(get_profile("t4"), 64, 32, shared_bytes=100)
    assert occ.shared_bytes_per_block == 256
    assert occ.limit_shared == 256
    assert occ.occupancy == 1.0
    assert occ.limited_by == "warps+blocks"
    # No shared memory at all: it limits nothing (None), and is not named.
    assert occupancy(get_profile("t4"), 64, 32).limit_shared is None


def test_a_block_that_cannot_launch():
    # 1024 threads x 65 regs: 2080 -> 2304 per warp x 32 warps = 73728 > 65536 per block.
    occ = occupancy(get_profile("h100-sxm"), 1024, 65)
    assert occ.blocks_per_sm == 0 and occ.occupancy == 0
    assert occ.limited_by.startswith("cannot launch") and "73728 registers" in occ.limited_by
    # 200 KiB of static shared memory does not fit an L4 block (99 KiB + 1 KiB reserve).
    occ = occupancy(get_profile("l4"), 128, 32, shared_bytes=200 * 1024)
    assert occ.blocks_per_sm == 0 and "shared memory" in occ.limited_by
    with pytest.raises(ValueError):
        occupancy(get_profile("l4"), 0, 32)
