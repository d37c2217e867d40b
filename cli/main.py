"""The ``gpuforge`` entry point: global options, core commands, plugin command groups.

Plugin command groups are mounted lazily: ``gpuforge --help`` lists them from the
help line they registered, and a group's module is imported only when it runs.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Optional

from gpuforge.core.threads import prefer_passive_openmp

prefer_passive_openmp()   # before anything loads torch or numba (see core/threads.py)

from gpuforge.cli.clickcompat import click
import typer
from typer.core import TyperCommand, TyperGroup

from gpuforge.core.context import Context, set_context
from gpuforge.core.run import EXIT_TERMINATED, Terminated
from gpuforge.core.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    GpuforgeError,
    PluginError,
    UsageError,
)

HELP = """GPU-efficiency techniques from the papers, as commands: quantize, fine-tune,
radiance fields, super-resolution, fraud clustering, hardware planning.

Every technique is a plugin (`gpuforge plugins list`); kernels run as a plain
reference, Numba on the CPU or Numba CUDA on NVIDIA GPUs (`gpuforge kernels list`).
Results go to stdout (`--json` for machine-readable output), logs to stderr.
Exit codes: 0 done, 1 internal error, 2 usage, 3 bad input, 4 unsupported
hardware or format, 130 interrupted, 143 terminated (SIGTERM).
"""

CORE_COMMANDS = {
    "plugins": ("gpuforge.cli.plugins_cmd:app", "List installed plugins and why any failed."),
    "kernels": ("gpuforge.cli.kernels_cmd:app", "List kernels and check every backend against its reference."),
    "doctor": ("gpuforge.cli.doctor:app", "Check Python, torch, Numba, CUDA, devices and plugins; say how to fix what is missing."),
    "run": ("gpuforge.cli.jobs_cmd:app", "Run a batch job (job.toml): gpuforge commands in order, resumable."),
    "demo": ("gpuforge.cli.demo:app", "Run every plugin's demo on built-in data and write a report folder."),
    "bench": ("gpuforge.cli.bench:app", "Time kernels and pipelines against their reference and anchor libraries."),
}


BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0", "y", "n", "t", "f")


def plain_flags(cmd: click.Command) -> click.Command:
    """Flags take no value, so help must not show one: typer labels them ``<bool>``
    (and counters ``<int>``), and users then type ``--json true``. Applied to a command
    and every subcommand."""
    for param in getattr(cmd, "params", []):
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
    help_option = cmd.get_help_option

    def get_help_option(ctx):  # --help is made per call, outside cmd.params
        opt = help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    if not getattr(help_option, "gpuforge_plain", False):
        get_help_option.gpuforge_plain = True
        cmd.get_help_option = get_help_option
    for sub in (getattr(cmd, "commands", None) or {}).values():
        plain_flags(sub)
    return cmd


def _flags(ctx: click.Context | None) -> set[str]:
    names: set[str] = set()
    while ctx is not None:
        for param in ctx.command.params:
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                names.update(param.opts)
        ctx = ctx.parent
    return names


def flag_value_hint(args: list[str], ctx: click.Context | None, word: str | None = None) -> str | None:
    """``--json true``: the one line that says the flag takes no value, with the command
    line that works. ``word`` limits the check to that token."""
    flags = _flags(ctx)
    for i in range(len(args) - 1):
        value = args[i + 1]
        if args[i] in flags and value.lower() in BOOLEAN_WORDS and (word is None or value == word):
            import shlex

            fixed = shlex.join(["gpuforge", *args[:i + 1], *args[i + 2:]])
            return f"{args[i]} is a flag and takes no value: drop {value!r} (`{fixed}`)"
    return None


SHARED_VERBS = ("bench", "plan")
"""DESIGN.md's verbs whose canonical form is the core's command: in a command group named
after its plugin, ``gpuforge <plugin> bench ...`` is ``gpuforge bench <plugin> ...`` and
``gpuforge <plugin> plan [VERB] ...`` is ``gpuforge plan <plugin> VERB ...`` (VERB may be
left out when the plugin has one estimate). A group's own command of that name is an
older spelling of the same thing and is not reached."""

ALIAS_HELP = "Same as `{}` (an older name, kept for scripts)."


def shared_verb_args(group: str, args: list[str]) -> list[str] | None:
    """``[group, verb, *rest]`` as the core command's arguments, or None when the group is
    not named after its plugin or the verb is not shared."""
    if len(args) < 1 or args[0] not in SHARED_VERBS:
        return None
    from gpuforge.core.plugins import get_registry

    reg = get_registry()
    owner = reg.commands.get(group)
    if owner is None or owner[0] != group:
        return None
    verb, rest = args[0], list(args[1:])
    if verb == "bench":
        return ["bench", group, *rest]
    verbs = sorted(v for (p, v) in reg.estimates if p == group)
    if rest and rest[0] in verbs:
        return ["plan", group, *rest]
    if len(verbs) == 1:
        return ["plan", group, verbs[0], *rest]
    return ["plan", group, *rest]


def _renamed(cmd: click.Command, name: str, short_help: str | None) -> click.Command:
    import copy

    twin = copy.copy(cmd)
    twin.name = name
    if short_help is not None:
        twin.short_help = short_help
    return twin


def apply_aliases(group: click.Command, aliases: dict[str, str]) -> None:
    """Make each alias and its canonical name the same command of ``group``, whichever of
    the two the plugin defines; help lists the canonical one with its own text."""
    cmds = getattr(group, "commands", None)
    if cmds is None:
        return
    for old, canonical in aliases.items():
        if (canonical in cmds) == (old in cmds):  # both defined, or neither: nothing to join
            continue
        real = cmds[canonical] if canonical in cmds else cmds[old]
        listed = {}
        for n, c in cmds.items():  # help lists the canonical name, then its alias
            if n in (old, canonical):
                listed[canonical] = _renamed(real, canonical, None)
                listed[old] = _renamed(real, old, ALIAS_HELP.format(canonical))
            else:
                listed[n] = c
        cmds.clear()
        cmds.update(listed)


def list_shared_verbs(group: click.Command, name: str) -> None:
    """Show ``bench``/``plan`` in a plugin group's help, as what they are."""
    cmds = getattr(group, "commands", None)
    if cmds is None:
        return
    from gpuforge.core.plugins import get_registry

    verbs = sorted(v for (p, v) in get_registry().estimates if p == name)
    for verb in SHARED_VERBS:
        if verb == "plan" and not verbs:
            continue
        canonical = f"gpuforge {verb} {name}"
        if verb == "plan":
            canonical += f" {verbs[0]}" if len(verbs) == 1 else " VERB"
        text = ALIAS_HELP.format(canonical) if verb in cmds else f"Same as `{canonical}`."
        cmds[verb] = TyperCommand(name=verb, help=text, short_help=text, add_help_option=False)


class PluginFailed(GpuforgeError):
    exit_code = EXIT_INTERNAL


def _load_typer(target: str, name: str) -> click.Command:
    """The click command for a registered typer app. Typer turns an app with a single
    command into that command; that is right only when the command carries the group's
    own name (``plan``, ``bench``): a plugin with one command ``greet`` is still the group
    ``gpuforge hello greet``."""
    from gpuforge.core.lazy import resolve

    app = resolve(target)
    cmds = getattr(app, "registered_commands", [])
    if len(cmds) == 1 and not app.registered_groups and app.registered_callback is None:
        only = cmds[0].name or typer.main.get_command_name(cmds[0].callback.__name__)
        if only != name:
            return typer.main.get_group(app)
    return typer.main.get_command(app)


class LazyCommand(TyperCommand):
    """Stands in for a command group until it is invoked: help listings read the
    registered one-line help, and only running it imports the module."""

    def __init__(self, name: str, target: str, help_line: str, plugin: str | None, aliases: dict | None = None):
        super().__init__(name=name, help=help_line, short_help=help_line)
        self.target, self.plugin = target, plugin
        self.aliases = dict(aliases or {})
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            try:
                self._real = _load_typer(self.target, self.name)
            except Exception as exc:
                if self.plugin is None:
                    raise
                from gpuforge.core.log import get_logger
                from gpuforge.core.plugins import get_registry

                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                info = get_registry().plugins.get(self.plugin)
                if info is not None:
                    info.status, info.reason = "failed", f"commands: {reason}"
                get_logger("gpuforge.plugins").warning("plugin commands failed to load", plugin=self.plugin, reason=reason)
                raise PluginFailed(f"plugin {self.plugin!r} failed to load its commands: {reason}") from exc
            self._real.name = self.name
            apply_aliases(self._real, self.aliases)
            if self.plugin is not None and self.plugin == self.name:
                list_shared_verbs(self._real, self.name)
            plain_flags(self._real)
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def get_help(self, ctx):  # `gpuforge help`-style access
        return self.real().get_help(ctx)


class PluginGroup(TyperGroup):
    """The root group: core commands, then the plugins' command groups."""

    def _plugin_commands(self, ctx: click.Context | None = None) -> dict[str, Any]:
        from gpuforge.core.plugins import get_registry

        if ctx is not None and not getattr(self, "_logging_ready", False):
            # Plugins load while the root's options are parsed but before its callback
            # runs: log their warnings in the format the user asked for (once; help
            # listings ask for every command).
            params = ctx.find_root().params
            from gpuforge.core.log import configure_logging

            fmt = params.get("log_format") if params.get("log_format") in ("console", "json") else "console"
            configure_logging(fmt, (params.get("verbose") or 0) - (params.get("quiet") or 0))
            self._logging_ready = True

        return get_registry().commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(super().list_commands(ctx)) + list(CORE_COMMANDS)
        names += sorted(n for n in self._plugin_commands(ctx) if n not in names)
        return names

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        if name in CORE_COMMANDS:
            target, help_line = CORE_COMMANDS[name]
            return LazyCommand(name, target, help_line, None)
        plugin_cmds = self._plugin_commands(ctx)
        if name in plugin_cmds:
            plugin, spec = plugin_cmds[name]
            return LazyCommand(name, spec.app, spec.help or f"Commands of the {plugin} plugin.", plugin, spec.aliases)
        return None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        forwarded = shared_verb_args(name, args[1:]) if name else None
        if forwarded is not None:
            args = forwarded
            name = args[0]
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from gpuforge.core.plugins import get_registry, not_installed_message

            from gpuforge.core.run import command_line

            hint = flag_value_hint(command_line(), ctx, word=name)
            if hint:
                raise UsageError(hint)
            from gpuforge.core.plugins import command_provider, enable_hint

            argv = command_line()
            info = get_registry().plugins.get(name)
            if info is not None and info.status != "loaded":
                raise UsageError(f"plugin {name!r} is {info.status} ({info.reason}); {enable_hint(info, argv)}")
            info = command_provider(name)
            if info is not None:
                raise UsageError(f"command {name!r} comes from the plugin {info.name!r}, which is {info.status} "
                                 f"({info.reason}); {enable_hint(info, argv)}")
            raise UsageError(f"unknown command {name!r}. {not_installed_message(name)}")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=PluginGroup,
    name="gpuforge",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _version(value: bool) -> None:
    if value:
        from gpuforge.core import version

        typer.echo(f"gpuforge {version()}")
        raise typer.Exit()


@app.callback()
def root(
    device: str = typer.Option("auto", "--device", help="Where to run: auto, cpu, cuda or cuda:N.", envvar="GPUFORGE_DEVICE"),
    backend: Optional[str] = typer.Option(
        None, "--backend", envvar="GPUFORGE_BACKEND",
        help="Force a kernel backend: reference, numba-cpu or numba-cuda (default: chosen by the data's device).",
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for reproducible runs."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    log_format: str = typer.Option("console", "--log-format", help="Logs on stderr: console or json."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More log output."),
    quiet: int = typer.Option(0, "-q", "--quiet", count=True, help="Only warnings and errors."),
    debug: bool = typer.Option(False, "--debug", envvar="GPUFORGE_DEBUG", help="Show tracebacks for errors."),
    strict_plugins: bool = typer.Option(
        False, "--strict-plugins", envvar="GPUFORGE_STRICT_PLUGINS", help="Fail when any plugin fails to load."
    ),
    cluster: Optional[str] = typer.Option(
        None, "--cluster", envvar="GPUFORGE_CLUSTER",
        help="local or local:N: run commands that can distribute on a Dask cluster of N worker processes "
             "started on this machine (loopback only).",
    ),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", envvar="GPUFORGE_SCHEDULER",
        help="tcp://HOST:PORT or tls://HOST:PORT: run commands that can distribute on this Dask scheduler.",
    ),
    dashboard: Optional[str] = typer.Option(
        None, "--dashboard", help="With --cluster: also start Dask's dashboard at ADDR (e.g. 127.0.0.1:8787)."),
    tls_ca_file: Optional[str] = typer.Option(None, "--tls-ca-file", help="CA certificate for a tls:// --scheduler."),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="Client certificate for a tls:// --scheduler."),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="Client key for a tls:// --scheduler."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    if not _DEVICE.match(device):
        raise UsageError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if backend is not None:
        from gpuforge.core.kernels import check_backend_name

        check_backend_name(backend)
    if log_format not in ("console", "json"):
        raise UsageError(f"--log-format {log_format!r} is not one of console, json")
    from gpuforge.core.cluster import parse as parse_cluster

    ctx = set_context(
        Context(
            device=device, backend=backend, seed=seed, json=json_out, log_format=log_format,
            verbosity=verbose - quiet, debug=debug, strict_plugins=strict_plugins,
            cluster=parse_cluster(cluster, scheduler, dashboard, tls_ca_file, tls_cert, tls_key),
        )
    )
    from gpuforge.core.log import configure_logging

    configure_logging(log_format, ctx.verbosity)
    if seed is not None:
        import random

        random.seed(seed)
    if strict_plugins:
        from gpuforge.core.plugins import get_registry

        failed = get_registry().failed()
        if failed:
            raise PluginError(
                "plugin(s) failed to load (--strict-plugins): " + "; ".join(f"{p.name}: {p.reason}" for p in failed)
            )


THREAD_VARIABLES = {"NUMBA_NUM_THREADS": 1024}
"""Thread-count variables read when a library loads: junk in NUMBA_NUM_THREADS printed
Numba's traceback (``abc``), an internal error (``0``) or crashed the process
(``99999``: segmentation fault). 1024 threads still ran here."""


def check_environment() -> None:
    """Refuse unusable thread-count variables up front, in one line (exit 2)."""
    import os

    for name, most in THREAD_VARIABLES.items():
        raw = os.environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if value is None or not 1 <= value <= most:
            raise UsageError(f"environment variable {name}={raw!r}: use a whole number of threads from 1 to {most}, "
                             f"or unset it")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the documented exit code."""
    from gpuforge.core.context import get_context

    args = list(sys.argv[1:] if argv is None else argv)
    from gpuforge.core.run import set_command_line

    set_command_line(args)
    command = plain_flags(typer.main.get_command(app))
    try:
        check_environment()
        rv = command.main(args=args, prog_name="gpuforge", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into a return value of 130
            typer.echo("interrupted", err=True)
    except GpuforgeError as exc:
        if get_context().debug:
            import traceback

            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    except click.exceptions.ClickException as exc:
        hint = flag_value_hint(args, getattr(exc, "ctx", None))
        if hint:
            typer.echo(f"error: {hint}", err=True)
        elif isinstance(exc, click.exceptions.UsageError) and type(exc).__name__ != "NoArgsIsHelpError":
            # one line, like every other error: what, and where to read more
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "gpuforge"
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message} (see `{where} --help`)", err=True)
        else:
            exc.show()
        code = exc.exit_code if exc.exit_code != 1 else EXIT_USAGE
    except Terminated:
        typer.echo("terminated (SIGTERM)", err=True)
        code = EXIT_TERMINATED
    except Exception as exc:  # an internal error: one line unless --debug
        if get_context().debug or "--debug" in args:
            import traceback

            traceback.print_exc()
        else:
            where = ""
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                where = f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
            typer.echo(f"internal error: {type(exc).__name__}: {exc}{where}; rerun with --debug for the traceback", err=True)
        code = EXIT_INTERNAL
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
