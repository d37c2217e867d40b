"""``gpuforge kernels inspect``: every numba-cuda kernel compiled for one GPU profile's
compute capability without a GPU, with its resources and its theoretical occupancy at
the launch that ``tuning.toml`` gives for that GPU.

How the numbers are obtained (no driver needed):

1. ``numba.cuda.compile_ptx(fn, sig, cc=...)`` (NVVM from ``numba-cuda[cu13]``) gives PTX;
2. nvJitLink (``cuda.bindings.nvjitlink``) assembles it to a cubin with ``-verbose``: its
   info log holds ptxas's report (registers, stack frame, spill stores and loads) and the
   linker's summary per entry (registers, static shared memory, local memory);
3. :func:`gpuforge.hardware.occupancy.occupancy` turns registers and shared memory into
   resident warps per SM from the profile's per-SM limits.

The registers read from the log are checked against the cubin's own ``EIATTR_REGCOUNT``
attribute (:func:`cubin_regcounts`) by the tests.

The compile cannot run under Numba's CUDA simulator (``compile_ptx`` is not simulated):
:func:`inspect_kernels` then runs itself in a child process without
``NUMBA_ENABLE_CUDASIM``.

Which block size a kernel runs with: a kernel's ``ptx()`` entries are ``(fn, sig)`` or
``(fn, sig, launch)``. Without ``launch`` the block is the kernel spec's tuned
``threads_per_block`` for that GPU (``core/tuning.py``: GPU id, compute capability,
architecture, default); ``launch`` may fix it (``{"threads_per_block": 256}`` for a
16x16 tile block, 1 for a one-thread reduction) and name a variant (``"variant": ...``).
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from gpuforge.core.errors import GpuforgeError, UnsupportedError

LOW_OCCUPANCY = 0.25


@dataclass(frozen=True)
class Resources:
    """What ptxas gave one kernel entry."""

    entry: str
    registers: int
    shared_bytes: int
    """Static shared memory per block (``cuda.shared.array``)."""
    local_bytes: int
    """Local memory per thread: the stack frame (``cuda.local.array`` and spills)."""
    spill_store_bytes: int
    spill_load_bytes: int


@dataclass
class KernelReport:
    """One compiled kernel at its tuned launch on one GPU."""

    kernel: str
    """The registered kernel (``plugin.name``) that launches this raw CUDA kernel."""
    function: str
    variant: str
    gpu: str
    cc: str
    registers: int
    shared_bytes: int
    local_bytes: int
    spill_bytes: int
    threads_per_block: int
    launch_source: str
    """Where the block size came from: ``tuning.toml`` (the merged layers) or ``fixed``."""
    occupancy: float
    blocks_per_sm: int
    limited_by: str
    flags: list[str] = field(default_factory=list)
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- compile
def _link_verbose(ptx: str, cc: tuple[int, int], max_registers: int | None = None) -> tuple[bytes, str]:
    """PTX -> (cubin, info log) with nvJitLink ``-verbose`` (ptxas's ``-v`` report)."""
    from cuda.bindings import nvjitlink

    options = [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose"]
    if max_registers:
        options.append(f"-maxrregcount={max_registers}")
    handle = nvjitlink.create(len(options), options)
    try:
        data = ptx.encode()
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel")
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as exc:
            raise GpuforgeError(f"nvJitLink could not assemble the PTX for sm_{cc[0]}{cc[1]}: {exc}: "
                                f"{_log(nvjitlink.get_error_log_size, nvjitlink.get_error_log, handle)}") from None
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        return bytes(cubin), _log(nvjitlink.get_info_log_size, nvjitlink.get_info_log, handle)
    finally:
        nvjitlink.destroy(handle)


def _log(size_fn, get_fn, handle) -> str:
    buf = bytearray(size_fn(handle))
    if buf:
        get_fn(handle, buf)
    return buf.rstrip(b"\0").decode(errors="replace")


_ENTRY = re.compile(r"\.entry\s+([A-Za-z0-9_$.]+)\s*\(")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_LINK_SUMMARY = re.compile(r"used (\d+) registers, .*?(\d+) stack, (\d+) bytes smem, .*?(\d+) bytes lmem")


def parse_info_log(log: str, entry: str) -> Resources:
    """The resources of ``entry`` from nvJitLink's ``-verbose`` info log.

    ptxas writes ``Function properties for <entry>`` then the stack frame and spill line;
    the linker then writes its own summary of the entry (``used N registers, ... S stack,
    M bytes smem, ... L bytes lmem``). The registers come from the linker: ptxas counts the
    entry alone, the linker includes the runtime routines it calls (64-bit division uses
    30 where the copy kernel itself needs 28), which is what the cubin records."""
    ptxas = log.split(f"Function properties for {entry}\n", 1)
    link = log.split(f"Function properties for '{entry}':", 1)
    if len(ptxas) != 2 or len(link) != 2:
        raise GpuforgeError(f"nvJitLink's info log has no report for {entry!r}; "
                            f"its format may have changed:\n{log[:2000]}")
    frame = _PTXAS_FRAME.search(ptxas[1])
    summary = _LINK_SUMMARY.search(link[1])
    if not (frame and summary):
        raise GpuforgeError(f"cannot read registers/spills/shared memory of {entry!r} from nvJitLink's "
                            f"info log:\n{log[:2000]}")
    return Resources(entry=entry, registers=int(summary.group(1)), shared_bytes=int(summary.group(3)),
                     local_bytes=max(int(frame.group(1)), int(summary.group(4))),
                     spill_store_bytes=int(frame.group(2)), spill_load_bytes=int(frame.group(3)))


def compile_resources(fn, sig: str, cc: tuple[int, int], max_registers: int | None = None) -> tuple[Resources, bytes]:
    """Compile one raw kernel for ``cc``; its resources and its cubin. ``max_registers``
    caps registers per thread (``-maxrregcount``), as a launch bound would."""
    from numba import cuda

    ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
    entries = _ENTRY.findall(ptx)
    if len(entries) != 1:
        raise GpuforgeError(f"{fn.__name__}: expected one .entry in the PTX, found {len(entries)}")
    cubin, log = _link_verbose(ptx, cc, max_registers)
    return parse_info_log(log, entries[0]), cubin


def cubin_regcounts(cubin: bytes) -> dict[str, int]:
    """Registers per kernel as the cubin itself records them: ``EIATTR_REGCOUNT``
    (attribute 0x2f: symbol index, count) in the ELF's ``.nv.info`` section."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ValueError("not a 64-bit ELF cubin")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]

    def cstr(offset: int) -> str:
        return cubin[offset:cubin.index(b"\0", offset)].decode()

    names = [cstr(sections[shstrndx][4] + s[0]) for s in sections]
    symtab = sections[names.index(".symtab")]
    strtab = sections[names.index(".strtab")]
    out: dict[str, int] = {}
    info = sections[names.index(".nv.info")]
    pos, end = info[4], info[4] + info[5]
    while pos < end:
        fmt, attr = cubin[pos], cubin[pos + 1]
        if fmt == 0x04:  # EIFMT_SVAL: u16 size, then the value
            size, = struct.unpack_from("<H", cubin, pos + 2)
            if attr == 0x2F:
                sym, count = struct.unpack_from("<II", cubin, pos + 4)
                name_off, = struct.unpack_from("<I", cubin, symtab[4] + sym * 24)
                out[cstr(strtab[4] + name_off)] = count
            pos += 4 + size
        else:             # EIFMT_NVAL / BVAL / HVAL: the value sits in the 4-byte header
            pos += 4
    return out


# ----------------------------------------------------------------------------- launch
def _entries(spec) -> list[tuple[Any, str, dict]]:
    from gpuforge.core.lazy import resolve

    out = []
    for item in resolve(spec.ptx)():
        fn, sig, *rest = item
        out.append((fn, sig, dict(rest[0]) if rest else {}))
    return out


def _variants(entries: list[tuple[Any, str, dict]]) -> list[str]:
    """A short label for entries whose function name repeats (one per input dtype)."""
    names = [fn.__name__ for fn, _, _ in entries]
    labels = []
    for (fn, sig, launch), name in zip(entries, names):
        if "variant" in launch:
            labels.append(str(launch["variant"]))
        elif names.count(name) > 1:
            labels.append(sig[sig.index("(") + 1:].split("[")[0].split(",")[0])
        else:
            labels.append("")
    return labels


def tuned_launch(plugin: str, kernel: str, profile) -> dict[str, Any]:
    """The kernel's merged ``tuning.toml`` parameters for ``profile`` (empty: no file)."""
    from gpuforge.core.tuning import lookup, plugin_tuning_path

    path = plugin_tuning_path(plugin)
    return lookup(path, kernel, profile) if path else {}


def inspect_spec(plugin: str, spec, profile) -> list[KernelReport]:
    """Every raw CUDA kernel of one registered kernel, compiled for ``profile``."""
    from gpuforge.hardware.occupancy import occupancy

    params = tuned_launch(plugin, spec.name, profile)
    entries = _entries(spec)
    rows = []
    for (fn, sig, launch), variant in zip(entries, _variants(entries)):
        res, _ = compile_resources(fn, sig, profile.cc)
        if "threads_per_block" in launch:
            tpb, source = int(launch["threads_per_block"]), "fixed"
        else:
            tpb, source = int(params.get("threads_per_block", 256)), (
                "tuning.toml" if "threads_per_block" in params else "default 256")
        occ = occupancy(profile, tpb, res.registers, res.shared_bytes, int(params.get("shared_mem_bytes", 0)))
        spill = res.spill_store_bytes + res.spill_load_bytes
        flags = []
        if spill:
            flags.append(f"spills ({res.spill_store_bytes} B stored, {res.spill_load_bytes} B loaded per thread)")
        if tpb < profile.warp_size:
            flags.append(f"serial: {tpb} thread(s) per block use {tpb}/{profile.warp_size} of a warp's lanes")
        if occ.blocks_per_sm == 0:
            flags.append(occ.limited_by)
        elif occ.occupancy < LOW_OCCUPANCY:
            flags.append(f"occupancy {occ.occupancy:.0%} < {LOW_OCCUPANCY:.0%}, limited by {occ.limited_by}")
        rows.append(KernelReport(
            kernel=spec.name, function=fn.__name__, variant=variant, gpu=profile.id,
            cc=profile.compute_capability, registers=res.registers, shared_bytes=res.shared_bytes,
            local_bytes=res.local_bytes, spill_bytes=spill, threads_per_block=tpb, launch_source=source,
            occupancy=round(occ.occupancy, 4), blocks_per_sm=occ.blocks_per_sm, limited_by=occ.limited_by,
            flags=flags, signature=sig))
    return rows


def check_toolkit(profile) -> None:
    """:class:`UnsupportedError` when this CUDA toolkit cannot target the profile's cc."""
    from numba.cuda.cudadrv.nvrtc import get_supported_ccs

    supported = set(get_supported_ccs())
    if profile.cc not in supported and profile.cc < min(supported):
        raise UnsupportedError(
            f"{profile.id} is compute capability {profile.compute_capability}, which this CUDA toolkit "
            f"cannot target (lowest: {'.'.join(map(str, min(supported)))}); inspect it with a CUDA 12 "
            f"numba-cuda[cu12] install")


def _inspect_here(names: Iterable[str] | None, gpu: str, advance=None) -> list[dict[str, Any]]:
    from gpuforge.core.plugins import get_registry
    from gpuforge.hardware.profiles import get_profile

    profile = get_profile(gpu)
    check_toolkit(profile)
    kernels = get_registry().kernels
    rows: list[dict[str, Any]] = []
    for name in cuda_kernel_names(names):
        plugin, spec = kernels[name]
        rows += [r.to_dict() for r in inspect_spec(plugin, spec, profile)]
        if advance is not None:
            advance()
    return rows


def cuda_kernel_names(names: Iterable[str] | None = None) -> list[str]:
    """The registered kernels with a numba-cuda backend (all, or those of ``names``);
    :class:`UsageError` for an unknown name or one without a CUDA backend."""
    from gpuforge.core.errors import UsageError
    from gpuforge.core.kernels import get_spec, kernel_specs

    if not names:
        return sorted(n for n, s in kernel_specs().items() if "numba-cuda" in s.backends and s.ptx)
    out = []
    for name in names:
        spec = get_spec(name)
        if "numba-cuda" not in spec.backends or not spec.ptx:
            raise UsageError(f"kernel {name} has no numba-cuda backend to inspect "
                             f"(it has: {', '.join(spec.backends)})")
        out.append(name)
    return out


def _simulated() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    config = sys.modules.get("numba.core.config")
    return bool(getattr(config, "ENABLE_CUDASIM", False))


def inspect_kernels(names: Iterable[str] | None, gpu: str, advance=None) -> list[dict[str, Any]]:
    """Rows for the named kernels (default: every kernel with a numba-cuda backend);
    ``advance()`` is called after each kernel.

    Under Numba's simulator the compile runs in a child process without it."""
    if not _simulated():
        return _inspect_here(names, gpu, advance)
    from gpuforge.core.safepath import python_argv, safe_env
    from gpuforge.hardware.profiles import get_profile

    get_profile(gpu)  # an unknown id fails here, with its hint
    env = safe_env()
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    cmd = [*python_argv(), "-m", "gpuforge.core.kernel_inspect", gpu, *cuda_kernel_names(names)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        from gpuforge.core.errors import BadInputError, UsageError

        error = {e.exit_code: e for e in (UsageError, BadInputError, UnsupportedError)}.get(proc.returncode, GpuforgeError)
        raise error(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                    f"kernel inspection in a child process failed (exit {proc.returncode})")
    return json.loads(proc.stdout)


def driver_resources(names: Iterable[str] | None, gpu: str) -> list[dict[str, Any]]:
    """On a machine with a GPU: every kernel as the driver loads it (numba's own compile,
    linked by the driver's JIT), the driver's registers, shared and local memory next to
    what :func:`inspect_kernels` computed for ``gpu`` without it. A difference means the
    driver's ptxas and nvJitLink's disagree (they are different CUDA versions)."""
    from numba import cuda

    predicted = {(r["kernel"], r["function"], r["variant"]): r for r in _inspect_here(names, gpu)}
    from gpuforge.core.kernels import kernel_specs

    specs = kernel_specs()
    rows = []
    for name in cuda_kernel_names(names):
        entries = _entries(specs[name])
        for (fn, sig, _launch), variant in zip(entries, _variants(entries)):
            row = {"kernel": name, "function": fn.__name__, "variant": variant}
            try:
                k = cuda.jit(sig)(fn)
                row.update(driver_registers=k.get_regs_per_thread(), driver_shared_bytes=k.get_shared_mem_per_block(),
                           driver_local_bytes=k.get_local_mem_per_thread())
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            p = predicted.get((name, fn.__name__, variant), {})
            row.update(registers=p.get("registers"), shared_bytes=p.get("shared_bytes"), local_bytes=p.get("local_bytes"))
            row["match"] = "error" not in row and row["driver_registers"] == row["registers"]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m gpuforge.core.kernel_inspect [--driver] GPU [KERNEL...]``: rows as JSON."""
    args = sys.argv[1:] if argv is None else argv
    driver = bool(args) and args[0] == "--driver"
    args = args[1:] if driver else args
    if not args:
        sys.stderr.write("usage: python -m gpuforge.core.kernel_inspect [--driver] GPU [KERNEL...]\n")
        return 2
    try:
        rows = (driver_resources if driver else _inspect_here)(args[1:] or None, args[0])
    except GpuforgeError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    sys.stdout.write(json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
