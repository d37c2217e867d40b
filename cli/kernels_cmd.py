"""``gpuforge kernels list|check|inspect``."""
from __future__ import annotations

from typing import Optional

import typer

from gpuforge.core.output import print_table
from gpuforge.core.run import Run, command

app = typer.Typer(help="List kernels, check every backend against its reference, inspect CUDA resources.",
                  no_args_is_help=True)


@command(app, "list", device=False)
def list_(run: Run) -> None:
    """Every kernel, the plugin that ships it, and its backends (without importing them)."""
    from gpuforge.core.plugins import get_registry

    rows = [
        {"name": name, "plugin": plugin, "backends": list(spec.backends), "summary": spec.summary}
        for name, (plugin, spec) in sorted(get_registry().kernels.items())
    ]

    def human() -> None:
        print_table([{**r, "backends": ", ".join(r["backends"])} for r in rows], title="kernels")

    run.result(rows, human)


@command(app, "check", device=False, backend=True)
def check(
    run: Run,
    name: Optional[str] = typer.Argument(None, help="One kernel (default: all)."),
) -> None:
    """Run every backend against the reference on generated and edge cases.

    numba-cuda runs on a GPU, or in Numba's simulator when NUMBA_ENABLE_CUDASIM=1
    (then only the small cases). ``--backend NAME`` checks only that backend (default:
    every available one). Exits 1 when any case fails.
    """
    from gpuforge.core.conformance import check_kernel, summarize
    from gpuforge.core.errors import GpuforgeError
    from gpuforge.core.kernels import check_backend_name, get_spec, kernel_specs
    from gpuforge.core.progress import progress

    ctx_backend = run.backend
    if ctx_backend is not None:
        check_backend_name(ctx_backend)
    specs = [get_spec(name)] if name else list(kernel_specs().values())
    results = []
    with progress("checking kernels", total=len(specs)) as bar:
        for spec in specs:
            results += check_kernel(spec, [ctx_backend] if ctx_backend else None)
            bar.advance()
    summary = summarize(results)
    failed = [r for r in results if r.status == "fail"]

    def human() -> None:
        per = {}
        for r in results:
            key = (r.kernel, r.backend)
            agg = per.setdefault(key, {"kernel": r.kernel, "backend": r.backend, "pass": 0, "fail": 0, "skip": 0, "note": ""})
            agg[r.status] += 1
            if r.status != "pass" and not agg["note"]:
                agg["note"] = f"{r.case}: {r.detail}"[:120]
        print_table(list(per.values()), title="kernel conformance")
        typer.echo(f"{summary['pass']} passed, {summary['fail']} failed, {summary['skip']} skipped")

    run.result({"summary": summary, "results": [r.to_dict() for r in results]}, human)
    if failed:  # a kernel that disagrees with its reference is our bug: exit 1
        run.fail_after(GpuforgeError(f"{len(failed)} kernel case(s) differ from the reference; first: "
                             f"{failed[0].kernel} [{failed[0].backend}] {failed[0].case}: {failed[0].detail}"))


_INSPECT_COLUMNS = ["kernel", "function", "registers", "shared_bytes", "local_bytes", "spill_bytes",
                    "threads_per_block", "occupancy", "limited_by", "flags"]


def inspect_markdown(rows: list[dict], gpu: str) -> str:
    """The inspect rows as a markdown table (docs/BENCHMARKS.md)."""
    head = ["kernel", "CUDA function", "regs", "shared B", "local B", "spill B", "threads", "occupancy",
            "limited by", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        fn = f"{r['function']} ({r['variant']})" if r["variant"] else r["function"]
        lines.append("| " + " | ".join([
            r["kernel"], fn, str(r["registers"]), str(r["shared_bytes"]), str(r["local_bytes"]),
            str(r["spill_bytes"]), str(r["threads_per_block"]), f"{r['occupancy']:.0%}", r["limited_by"],
            "; ".join(r["flags"]) or "-"]) + " |")
    flagged = sum(1 for r in rows if r["flags"])
    lines.append("")
    lines.append(f"{len(rows)} CUDA functions compiled for {gpu} (cc {rows[0]['cc'] if rows else '?'}), "
                 f"{flagged} flagged.")
    return "\n".join(lines)


@command(app, "inspect", device=False)
def inspect(
    run: Run,
    name: Optional[str] = typer.Argument(None, help="One kernel (default: every kernel with a numba-cuda backend)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU profile id (`gpuforge hw list`); default: this machine's GPU."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table (for docs/BENCHMARKS.md)."),
) -> None:
    """Compile every CUDA kernel for a GPU's compute capability (no GPU needed) and report
    registers, shared and local memory, spills, and the theoretical occupancy at the launch
    tuning.toml gives for that GPU. Flags spills, occupancy under 25% (with the limiting
    resource) and one-thread blocks. Nothing runs: these are compiler figures."""
    from gpuforge.core.errors import UsageError
    from gpuforge.core.kernel_inspect import cuda_kernel_names, inspect_kernels
    from gpuforge.core.progress import progress

    if gpu is None:
        from gpuforge.core.tuning import current_gpu_profile

        profile = current_gpu_profile()
        if profile is None:
            raise UsageError("no GPU profile for this machine: name one with --gpu ID (`gpuforge hw list` shows the ids)")
        gpu = profile.id
    names = [name] if name else None
    with progress(f"compiling for {gpu}", total=len(cuda_kernel_names(names))) as bar:
        rows = inspect_kernels(names, gpu, advance=bar.advance)

    def human() -> None:
        if markdown:
            typer.echo(inspect_markdown(rows, gpu))
            return
        table = [{**r, "function": f"{r['function']} ({r['variant']})" if r["variant"] else r["function"],
                  "occupancy": f"{r['occupancy']:.0%}", "flags": "; ".join(r["flags"])} for r in rows]
        print_table(table, columns=_INSPECT_COLUMNS, title=f"CUDA kernels compiled for {gpu} (not run)")
        flagged = [r for r in rows if r["flags"]]
        typer.echo(f"{len(rows)} CUDA functions, {len(flagged)} flagged")

    run.result(rows, human)
