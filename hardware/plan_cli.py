"""``gpuforge plan PLUGIN VERB [the command's arguments] [--gpu ID|all] [--json]``.

A top-level command (one typer command, not a group): it asks the plugin's registered
estimate (``EstimateSpec(plugin, verb, "module:estimate")``) what the work needs and
prints, per GPU profile, whether it fits, the roofline time, the cost from
``pricing.toml`` and the recommendation. Every argument after VERB that is not
``--gpu``/``--json`` is handed to ``estimate(args)`` unchanged.
"""
from __future__ import annotations

import typer

from gpuforge.core.errors import EXIT_INTERNAL, GpuforgeError
from gpuforge.core.run import Run, command

app = typer.Typer(help="Will this job fit, how long, what does it cost: per GPU profile.", add_completion=False)


class EstimateFailed(GpuforgeError):
    """A registered estimate that cannot be loaded: the plugin's bug, exit 1."""

    exit_code = EXIT_INTERNAL


def registered_estimates() -> dict:
    from gpuforge.core.plugins import get_registry

    return dict(get_registry().estimates)


def _listing(estimates: dict) -> str:
    if not estimates:
        return "no plugin has registered an estimate yet"
    return "registered: " + ", ".join(f"{p} {v}" for p, v in sorted(estimates))


def run_estimate(plugin: str, verb: str, args: list[str]):
    """Resolve and call the plugin's estimate; returns a checked Estimate."""
    from gpuforge.core.errors import GpuforgeError, UsageError
    from gpuforge.core.lazy import resolve
    from gpuforge.hardware.planner import check_estimate

    estimates = registered_estimates()
    key = (plugin, verb)
    if key not in estimates:
        raise UsageError(f"no estimate for `{plugin} {verb}`; {_listing(estimates)}")
    owner, spec = estimates[key]
    try:
        fn = resolve(spec.run)
    except (ImportError, AttributeError, ValueError) as exc:
        raise EstimateFailed(f"the {owner!r} plugin registered an estimate for `{plugin} {verb}` at {spec.run}, "
                             f"but it does not load ({type(exc).__name__}: {exc}); report it to the plugin's "
                             f"authors") from None
    import contextlib
    import io

    # An argparse parser inside the estimate prints its usage and error to stderr before
    # it exits: keep that text, and say it in one line.
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            est = fn(list(args))
    except GpuforgeError:
        raise
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
        raise UsageError(f"`plan {plugin} {verb}`: {_parser_error(said.getvalue(), args, code)}") from None
    finally:
        _replay(said.getvalue())
    return check_estimate(est, f"estimate of `{plugin} {verb}` ({spec.run})")


def _parser_error(text: str, args: list[str], code: int) -> str:
    """argparse's last line ("prog: error: argument --rows: invalid int value: '1e12'")
    without its program name; the arguments and exit code when it said nothing."""
    import re

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    if errors:
        return re.sub(r"^.*?: error: ", "", errors[-1])
    return f"the plugin rejected the arguments {' '.join(args)!r} (exit {code})"


def _replay(text: str) -> None:
    """What the estimate wrote to stderr besides a parser's usage (warnings, logs)."""
    import sys

    keep = [ln for ln in text.splitlines(keepends=True)
            if ": error: " not in ln and not ln.startswith("usage:") and not ln.startswith(" ")]
    if keep:
        sys.stderr.write("".join(keep))


@command(app, "plan", device=False, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def plan(
    run: Run,
    ctx: typer.Context,
    plugin: str = typer.Argument(..., metavar="PLUGIN", help="The plugin (e.g. finetune)."),
    verb: str = typer.Argument(..., metavar="VERB", help="Its command (e.g. lora); its arguments follow."),
    gpu: str = typer.Option("all", "--gpu", help="A GPU id, a comma-separated list, or all."),
) -> None:
    """Will PLUGIN VERB fit, how long, what does it cost: per GPU profile.

    Fits or not, estimated time (roofline), cost from pricing.toml, and the cheapest GPU
    that fits. Arguments after VERB are the
    command's own (e.g. `gpuforge plan finetune lora --params 65e9 --qlora --gpu all`).
    Exit 2 for an unknown plugin/verb (the registered ones are listed), 3 for an
    unknown GPU id or a bad value."""
    from gpuforge.core.output import print_table
    from gpuforge.hardware.planner import plan_estimate
    from gpuforge.hardware.pricing import load_pricing
    from gpuforge.hardware.profiles import select
    from gpuforge.hardware.registry import all_profiles
    from gpuforge.hardware.roofline import format_seconds

    profiles = select(gpu, all_profiles())  # an unknown GPU fails before the estimate runs
    est = run_estimate(plugin, verb, list(ctx.args))
    from gpuforge.hardware.bench import measured_efficiencies

    result = plan_estimate(est, profiles, load_pricing(), measured_efficiencies())
    data = {"plugin": plugin, "verb": verb, "args": list(ctx.args), **result.to_dict()}

    def human() -> None:
        gib = 2**30
        print(f"{est.what}")
        parts = ", ".join(f"{k} {v / gib:.2f} GiB" for k, v in est.breakdown.items())
        print(f"needs {est.memory_bytes / gib:.2f} GiB" + (f" ({parts})" if parts else "")
              + (f"; {est.flops:.3g} FLOPs, {est.bytes_moved:.3g} bytes moved, {est.dtype}" if est.flops or est.bytes_moved else ""))
        rows = [{
            "gpu": r.gpu, "fits": "yes" if r.fits else "no", "usable GiB": f"{r.usable_gib:.1f}",
            "time": format_seconds(r.time_s), "bound": r.bound,
            "$/h": "-" if r.usd_per_hour is None else f"{r.usd_per_hour:g}",
            "cost $": "-" if r.cost_usd is None else f"{r.cost_usd:.4g}",
            "min GPUs": r.min_gpus, "note": r.note,
        } for r in result.gpus]
        print_table(rows, title=f"plan {plugin} {verb}")
        print(f"recommendation: {result.recommendation}")
        for n in result.notes:
            print(f"note: {n}")
        print(f"({result.reserve}; times are roofline lower bounds at datasheet peaks unless noted; "
              f"prices are dated list prices from hardware/pricing.toml)")

    run.result(data, human)
