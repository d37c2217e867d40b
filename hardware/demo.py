"""The hardware plugin's demo and doctor check."""
from __future__ import annotations

from pathlib import Path


def run(ctx, out_dir: Path) -> str:
    from gpuforge.hardware.cpu import cpu_profile
    from gpuforge.hardware.detect import detect_gpus

    det = detect_gpus()
    lines = []
    if det.cpu_only:
        lines.append(f"- GPU: {det.reason}")
    for g in det.gpus:
        d = g.to_dict()
        lines.append(f"- GPU {d['index']}: {d['name']} (cc {d['compute_capability']}), profile `{d.get('profile_id')}`")
    cpu = cpu_profile()
    lines.append(
        f"- CPU: {cpu.get('model')} — {cpu.get('logical_cores')} cores, measured memory bandwidth "
        f"{cpu.get('memory_bandwidth_gbs', 0):.1f} GB/s (best of copy/triad), FP32 {cpu.get('fp32_gflops', 0):.1f} GFLOP/s (matmul)"
    )
    return "\n".join(lines)


def doctor_profiles():
    from gpuforge.hardware.registry import all_profiles

    profiles = all_profiles()
    return True, f"{len(profiles)} GPU profiles load and pass the schema check", ""
