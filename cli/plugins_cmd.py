"""``gpuforge plugins list|info``."""
from __future__ import annotations

import typer

from gpuforge.core.output import print_table
from gpuforge.core.run import Run, command

app = typer.Typer(help="List installed plugins and why any failed.", no_args_is_help=True)


@command(app, "list", device=False)
def list_(
    run: Run,
    all_: bool = typer.Option(False, "--all", help="Also show disabled plugins."),
) -> None:
    """Every plugin: name, source (builtin or entry point), status and what it registered."""
    from gpuforge.core.plugins import get_registry

    plugins = [p for p in get_registry().plugins.values() if all_ or p.status != "disabled"]
    rows = [p.to_dict() for p in plugins]

    def human() -> None:
        table = [
            {
                "name": p.name,
                "status": p.status,
                "source": p.source if p.source == "builtin" else f"{p.distribution or '?'} {p.version or ''}".strip(),
                "provides": ", ".join(f"{k} {v}" for k, v in p.registered.items() if v),
                "description / reason": p.reason if p.status != "loaded" else p.description,
            }
            for p in plugins
        ]
        print_table(table, title="gpuforge plugins")

    run.result(rows, human)


@command(app, "info", device=False)
def info(run: Run, name: str = typer.Argument(..., help="Plugin name.")) -> None:
    """One plugin in detail: module, distribution, status, commands, kernels, demos, benchmarks."""
    from gpuforge.core.plugins import get_registry, plugin_info

    p = plugin_info(name)
    reg = get_registry()
    data = p.to_dict()
    data["commands"] = [c for c, (owner, _) in reg.commands.items() if owner == name]
    data["kernels"] = [k for k, (owner, _) in reg.kernels.items() if owner == name]
    data["demos"] = [d.name for owner, d in reg.demos if owner == name]
    data["benchmarks"] = [b.name for owner, b in reg.benchmarks if owner == name]
    data["estimates"] = [f"{k[0]} {k[1]}" for k, (owner, _) in reg.estimates.items() if owner == name]
    lines = [f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in data.items() if v not in (None, "", [], {})]
    run.result(data, "\n".join(lines))
