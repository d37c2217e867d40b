"""``gpuforge kernels list|check``."""
from __future__ import annotations

from typing import Optional

import typer

from gpuforge.core.context import get_context
from gpuforge.core.output import emit, print_table

app = typer.Typer(help="List kernels and check every backend against its reference.", no_args_is_help=True)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Every kernel, the plugin that ships it, and its backends (without importing them)."""
    from gpuforge.core.plugins import get_registry

    rows = [
        {"name": name, "plugin": plugin, "backends": list(spec.backends), "summary": spec.summary}
        for name, (plugin, spec) in sorted(get_registry().kernels.items())
    ]

    def human() -> None:
        print_table([{**r, "backends": ", ".join(r["backends"])} for r in rows], title="kernels")

    emit(rows, human, as_json=json_out or get_context().json)


@app.command("check")
def check(
    name: Optional[str] = typer.Argument(None, help="One kernel (default: all)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Only this backend (default: every available one)."),
    json_out: bool = typer.Option(False, "--json", help="Print every case result as JSON."),
) -> None:
    """Run every backend against the reference on generated and edge cases.

    numba-cuda runs on a GPU, or in Numba's simulator when NUMBA_ENABLE_CUDASIM=1
    (then only the small cases). Exits 1 when any case fails.
    """
    from gpuforge.core.conformance import check_kernel, summarize
    from gpuforge.core.errors import GpuforgeError, UsageError
    from gpuforge.core.kernels import get_spec, kernel_specs
    from gpuforge.core.progress import progress
    from gpuforge.core.specs import BACKENDS

    ctx_backend = backend or get_context().backend
    if ctx_backend is not None and ctx_backend not in BACKENDS:
        raise UsageError(f"--backend {ctx_backend!r} is not one of {', '.join(BACKENDS)}")
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

    emit({"summary": summary, "results": [r.to_dict() for r in results]}, human, as_json=json_out or get_context().json)
    if failed:  # a kernel that disagrees with its reference is our bug: exit 1
        raise GpuforgeError(f"{len(failed)} kernel case(s) differ from the reference; first: "
                             f"{failed[0].kernel} [{failed[0].backend}] {failed[0].case}: {failed[0].detail}")
