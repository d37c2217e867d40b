"""Load plugins (built-ins from plugins.toml, third-party from entry points) and
collect what their hooks register, isolating each plugin's failures.

Switches: ``GPUFORGE_DISABLE_PLUGINS=a,b``, ``GPUFORGE_LOAD_PLUGINS=a,b`` (only
these), ``[plugins] disabled`` in the user config, ``GPUFORGE_TRACE_PLUGINS=1``
(print every hook call to stderr), ``GPUFORGE_STRICT_PLUGINS=1`` (a failed
plugin is fatal, like ``--strict-plugins``).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

import pluggy

from gpuforge.core import hookspecs, specs
from gpuforge.core.config import env_list, load_config
from gpuforge.core.errors import PluginError
from gpuforge.core.tomlread import read_toml

_ACCEPTS: dict[str, tuple[type, ...]] = {
    "register_commands": (specs.CommandSpec,),
    "register_kernels": (specs.KernelSpec, specs.BackendSpec, specs.KernelImpl),
    "register_hardware": (specs.ProfileDir, specs.TuningSpec),
    "register_benchmarks": (specs.BenchmarkSpec,),
    "register_demos": (specs.DemoSpec,),
    "register_estimates": (specs.EstimateSpec,),
    "register_doctor_checks": (specs.DoctorCheck,),
}


@dataclass
class PluginInfo:
    name: str
    module: str
    source: str
    """``builtin`` or ``entrypoint``."""
    description: str = ""
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"
    """``loaded``, ``disabled`` or ``failed``."""
    reason: str = ""
    registered: dict[str, int] = field(default_factory=dict)
    library: bool = False
    """A core library (``library = true`` in plugins.toml): always loaded, never disabled."""
    declared_commands: list[str] = field(default_factory=list, repr=False)
    """Command names its hook registered, kept even when the plugin then failed: a user
    who types one is told which plugin it belongs to."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "source": self.source,
            "description": self.description,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
            "library": self.library,
            "registered": dict(self.registered),
        }


@dataclass
class Registry:
    """Everything the loaded plugins registered, each tagged with its plugin's name."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    commands: dict[str, tuple[str, specs.CommandSpec]] = field(default_factory=dict)
    kernels: dict[str, tuple[str, specs.KernelSpec]] = field(default_factory=dict)
    backends: dict[str, tuple[str, specs.BackendSpec]] = field(
        default_factory=lambda: {b.name: ("core", b) for b in specs.BUILTIN_BACKENDS})
    kernel_impls: list[tuple[str, specs.KernelImpl]] = field(default_factory=list)
    profile_dirs: list[tuple[str, specs.ProfileDir]] = field(default_factory=list)
    tuning: dict[str, specs.TuningSpec] = field(default_factory=dict)
    benchmarks: list[tuple[str, specs.BenchmarkSpec]] = field(default_factory=list)
    demos: list[tuple[str, specs.DemoSpec]] = field(default_factory=list)
    estimates: dict[tuple[str, str], tuple[str, specs.EstimateSpec]] = field(default_factory=dict)
    doctor_checks: list[tuple[str, specs.DoctorCheck]] = field(default_factory=list)

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]


def builtin_plugins() -> list[dict[str, Any]]:
    """The ``[[plugin]]`` entries of the packaged plugins.toml."""
    ref = resources.files("gpuforge.plugins").joinpath("plugins.toml")
    with resources.as_file(ref) as path:
        data = read_toml(path, "plugins.toml")
    return list(data.get("plugin", []))


CORE_COMMAND_NAMES = ("plugins", "kernels", "doctor", "run", "demo", "bench")
"""Command names the core itself provides (``gpuforge.cli.main.CORE_COMMANDS``): a
plugin's command of the same name would never be reached, so it is refused."""

_COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class InvalidContribution(Exception):
    """Something a plugin registered cannot work: the plugin is listed as failed."""


def _check_target(target: Any, what: str) -> None:
    """``"module:attr"`` whose module exists, checked without importing it:
    ``find_spec`` imports only the parent packages (a plugin's own, light ones)."""
    if not isinstance(target, str):
        raise InvalidContribution(f"{what}: expected a 'module:attr' string, got {type(target).__name__}")
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise InvalidContribution(f"{what}: {target!r} is not 'module:attr'")
    if not _module_exists(module):
        raise InvalidContribution(f"{what}: module {module!r} of {target!r} cannot be found")


@lru_cache(maxsize=None)
def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or fails to import
        return False


def _check_profiles(registry: Registry, path: str) -> None:
    """A plugin's GPU profiles load and pass the schema, and their ids clash with none
    already known: checked here, so one bad number fails its plugin, not `hw list`."""
    from gpuforge.core.errors import GpuforgeError
    from gpuforge.hardware.profiles import load_profiles

    try:
        load_profiles([*(spec.path for _p, spec in registry.profile_dirs), path])
    except GpuforgeError as exc:
        raise InvalidContribution(f"GPU profiles in {path}: {exc}") from None


def _check_tuning(spec: specs.TuningSpec) -> None:
    from gpuforge.core.errors import GpuforgeError
    from gpuforge.core.tuning import check_file

    try:
        check_file(spec.path)
    except GpuforgeError as exc:
        raise InvalidContribution(str(exc)) from None


def validate(item: Any, plugin: str, registry: Registry) -> None:
    """Refuse what cannot work, at load time, without importing anything heavy."""
    if isinstance(item, specs.CommandSpec):
        if not isinstance(item.name, str) or not _COMMAND_NAME.match(item.name):
            raise InvalidContribution(f"command name {item.name!r}: use lowercase letters, digits and dashes")
        if item.name in CORE_COMMAND_NAMES:
            raise InvalidContribution(f"command {item.name!r} is one of gpuforge's own commands; choose another name")
        _check_target(item.app, f"command {item.name!r}")
        aliases = item.aliases
        if not hasattr(aliases, "items") or not all(
                isinstance(a, str) and isinstance(c, str) and _COMMAND_NAME.match(a) and _COMMAND_NAME.match(c)
                and a != c for a, c in aliases.items()):
            raise InvalidContribution(f"command {item.name!r}: aliases must map an old command name to the "
                                      f"canonical one (lowercase names, different), got {aliases!r}")
    elif isinstance(item, specs.KernelSpec):
        for backend, target in dict(item.backends).items():
            _check_target(target, f"kernel {item.name!r} backend {backend}")
        for field_name in ("cases", "ptx", "compare"):
            if getattr(item, field_name) is not None:
                _check_target(getattr(item, field_name), f"kernel {item.name!r} {field_name}")
    elif isinstance(item, specs.BackendSpec):
        if not isinstance(item.name, str) or not _COMMAND_NAME.match(item.name):
            raise InvalidContribution(f"backend name {item.name!r}: use lowercase letters, digits and dashes")
        if item.device not in ("cpu", "cuda", "any"):
            raise InvalidContribution(f"backend {item.name!r}: device must be cpu, cuda or any, not {item.device!r}")
        if item.available is not None:
            _check_target(item.available, f"backend {item.name!r} available")
    elif isinstance(item, specs.KernelImpl):
        _check_target(item.impl, f"kernel {item.kernel!r} backend {item.backend}")
    elif isinstance(item, specs.ProfileDir):
        _check_profiles(registry, item.path)
    elif isinstance(item, specs.TuningSpec):
        if item.plugin != plugin:
            raise InvalidContribution(f"TuningSpec for plugin {item.plugin!r}: a plugin registers only its own tuning "
                                      f"(TuningSpec({plugin!r}, ...))")
        _check_tuning(item)
    elif isinstance(item, (specs.BenchmarkSpec, specs.DemoSpec, specs.DoctorCheck)):
        _check_target(item.run, f"{type(item).__name__} {item.name!r}")
    elif isinstance(item, specs.EstimateSpec):
        _check_target(item.run, f"estimate {item.plugin} {item.verb}")


class _Collector:
    """The ``register`` callback handed to one plugin's hook: checks types, records."""

    def __init__(self, registry: Registry, plugin: PluginInfo, hook: str):
        self.registry, self.plugin, self.hook = registry, plugin, hook
        self.items: list[Any] = []

    def __call__(self, item: Any) -> None:
        accepted = _ACCEPTS[self.hook]
        if not isinstance(item, accepted):
            names = " or ".join(t.__name__ for t in accepted)
            raise TypeError(f"{self.hook} registered {type(item).__name__}, expected {names}")
        self.items.append(item)

    def commit(self) -> None:
        reg, name = self.registry, self.plugin.name
        for item in self.items:
            validate(item, name, reg)
            if isinstance(item, specs.CommandSpec):
                if item.name in reg.commands:
                    raise ValueError(f"command {item.name!r} is already provided by plugin {reg.commands[item.name][0]!r}")
                reg.commands[item.name] = (name, item)
            elif isinstance(item, specs.BackendSpec):
                if item.name in reg.backends:
                    raise ValueError(f"backend {item.name!r} is already provided by {reg.backends[item.name][0]!r}")
                reg.backends[item.name] = (name, item)
            elif isinstance(item, specs.KernelImpl):
                reg.kernel_impls.append((name, item))
            elif isinstance(item, specs.KernelSpec):
                if "reference" not in item.backends:
                    raise ValueError(f"kernel {item.name!r} has no reference backend")
                if item.name in reg.kernels:
                    raise ValueError(f"kernel {item.name!r} is already provided by plugin {reg.kernels[item.name][0]!r}")
                reg.kernels[item.name] = (name, item)
            elif isinstance(item, specs.ProfileDir):
                reg.profile_dirs.append((name, item))
            elif isinstance(item, specs.TuningSpec):
                reg.tuning[item.plugin] = item
            elif isinstance(item, specs.BenchmarkSpec):
                reg.benchmarks.append((name, item))
            elif isinstance(item, specs.DemoSpec):
                reg.demos.append((name, item))
            elif isinstance(item, specs.EstimateSpec):
                reg.estimates[(item.plugin, item.verb)] = (name, item)
            elif isinstance(item, specs.DoctorCheck):
                reg.doctor_checks.append((name, item))
        self.plugin.registered[self.hook.removeprefix("register_")] = len(self.items)


def _discover() -> list[PluginInfo]:
    found: list[PluginInfo] = []
    for entry in builtin_plugins():
        found.append(
            PluginInfo(
                name=entry["name"],
                module=entry["module"],
                source="builtin",
                description=entry.get("description", ""),
                distribution="gpuforge",
                status="loaded" if entry.get("enabled", True) or entry.get("library") else "disabled",
                reason="" if entry.get("enabled", True) or entry.get("library") else "disabled in plugins.toml",
                library=bool(entry.get("library", False)),
            )
        )
    names = {p.name for p in found}
    for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            source="entrypoint",
            # A third-party plugin's description is its distribution's one-line summary
            # (`description` in pyproject.toml): read from metadata, nothing imported.
            description=(dist.metadata.get("Summary") or "") if dist else "",
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        if ep.name in names:
            info.status, info.reason = "failed", f"name clashes with an already installed plugin {ep.name!r}"
        names.add(ep.name)
        found.append(info)
    return found


def _apply_switches(plugins: list[PluginInfo]) -> None:
    only = env_list("GPUFORGE_LOAD_PLUGINS")
    disabled_env = set(env_list("GPUFORGE_DISABLE_PLUGINS") or [])
    disabled_cfg = set(load_config().get("plugins", {}).get("disabled", []))
    for p in plugins:
        if p.status != "loaded":
            continue
        if p.library:
            if p.name in disabled_env or p.name in disabled_cfg:
                from gpuforge.core.log import get_logger

                get_logger("gpuforge.plugins").warning(
                    f"{p.name} is a core library (the core and other plugins use it); it stays loaded")
            continue
        if only is not None and p.name not in only:
            p.status, p.reason = "disabled", "not in GPUFORGE_LOAD_PLUGINS"
        elif p.name in disabled_env:
            p.status, p.reason = "disabled", "in GPUFORGE_DISABLE_PLUGINS"
        elif p.name in disabled_cfg:
            p.status, p.reason = "disabled", "disabled in the user config [plugins] disabled"


def _load_module(info: PluginInfo) -> Any:
    if ":" in info.module:  # an entry point may name an object in a module
        from gpuforge.core.lazy import resolve

        return resolve(info.module)
    return importlib.import_module(info.module)


def _check_hooks(pm: pluggy.PluginManager, plugin_obj: Any) -> None:
    for caller in pm.get_hookcallers(plugin_obj) or []:
        if caller.spec is None:
            raise pluggy.PluginValidationError(plugin_obj, f"unknown hook {caller.name!r} (known: {', '.join(hookspecs.HOOKS)})")


def load_registry(*, strict: bool = False) -> Registry:
    """Discover, register and call every enabled plugin; never raises for a broken
    plugin unless ``strict`` (then :class:`PluginError`)."""
    from gpuforge.core.log import get_logger

    log = get_logger("gpuforge.plugins")
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("GPUFORGE_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[plugins] {msg}"))
        pm.enable_tracing()
    registry = Registry()
    plugins = _discover()
    _apply_switches(plugins)
    for info in plugins:
        registry.plugins[info.name] = info
        if info.status != "loaded":
            continue
        try:
            obj = _load_module(info)
            pm.register(obj, name=info.name)
            _check_hooks(pm, obj)
            collectors = []
            for hook_name in hookspecs.HOOKS:
                for impl in getattr(pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is not obj:
                        continue
                    collector = _Collector(registry, info, hook_name)
                    if os.environ.get("GPUFORGE_TRACE_PLUGINS"):
                        sys.stderr.write(f"[plugins] {info.name}.{hook_name}()\n")
                    impl.function(register=collector)
                    collectors.append(collector)
            info.declared_commands = _command_names(collectors)
            # Commit only when every hook of the plugin succeeded: all or nothing.
            for collector in collectors:
                collector.commit()
        except Exception as exc:  # one broken plugin never breaks the CLI
            info.status = "failed"
            text = str(exc) if isinstance(exc, InvalidContribution) else f"{type(exc).__name__}: {exc}"
            info.reason = " ".join(text.split())[:400]
            info.registered = {}
            _forget(registry, info.name)
            if pm.get_plugin(info.name) is not None:
                pm.unregister(name=info.name)
            log.warning("plugin failed to load", plugin=info.name, reason=info.reason)
    _join_kernel_backends(registry, log)
    if strict:
        failed = registry.failed()
        if failed:
            details = "; ".join(f"{p.name}: {p.reason}" for p in failed)
            raise PluginError(f"plugin(s) failed to load with --strict-plugins: {details}")
    return registry


def _join_kernel_backends(registry: Registry, log: Any) -> None:
    """Once every plugin loaded: add the separately registered implementations to their
    kernels, and check that every backend a kernel names is a known one. A plugin whose
    contribution does not fit fails as a whole (its other contributions are dropped)."""
    from dataclasses import replace

    def fail(plugin: str, reason: str) -> None:
        info = registry.plugins.get(plugin)
        if info is None or info.status == "failed":
            return
        info.status, info.reason, info.registered = "failed", reason, {}
        _forget(registry, plugin)
        log.warning("plugin failed to load", plugin=plugin, reason=reason)

    for plugin, impl in list(registry.kernel_impls):
        if registry.plugins.get(plugin) and registry.plugins[plugin].status == "failed":
            continue
        if impl.kernel not in registry.kernels:
            fail(plugin, f"backend {impl.backend} for kernel {impl.kernel!r}: no such kernel is loaded")
            continue
        if impl.backend not in registry.backends:
            fail(plugin, f"kernel {impl.kernel!r}: unknown backend {impl.backend!r} (register a BackendSpec)")
            continue
        owner, spec = registry.kernels[impl.kernel]
        if impl.backend in spec.backends:
            fail(plugin, f"kernel {impl.kernel!r} already has a {impl.backend} backend")
            continue
        registry.kernels[impl.kernel] = (owner, replace(spec, backends={**spec.backends, impl.backend: impl.impl}))
    for name, (plugin, spec) in list(registry.kernels.items()):
        unknown = sorted(set(spec.backends) - set(registry.backends))
        if unknown:
            fail(plugin, f"kernel {name!r} has unknown backends {unknown} (register a BackendSpec for them)")


def _command_names(collectors: list[_Collector]) -> list[str]:
    return [item.name for c in collectors for item in c.items if isinstance(item, specs.CommandSpec)]


def _probe_commands(info: PluginInfo) -> list[str]:
    """The command names a disabled plugin would register. Only asked on the error path
    (someone typed a command nobody provides), so a disabled plugin costs nothing
    otherwise; any failure means "unknown"."""
    try:
        obj = _load_module(info)
        hook = getattr(obj, "register_commands", None)
        if hook is None:
            return []
        found: list[Any] = []
        hook(register=found.append)
        return [item.name for item in found if isinstance(item, specs.CommandSpec)]
    except Exception:  # a disabled plugin may be disabled because it is broken
        return []


def command_provider(name: str) -> PluginInfo | None:
    """The plugin that is not loaded (disabled or failed) but provides command ``name``."""
    plugins = list(get_registry().plugins.values())
    for info in plugins:
        if info.status != "loaded" and name in info.declared_commands:
            return info
    for info in plugins:
        if info.status == "disabled" and name in _probe_commands(info):
            return info
    return None


def enable_hint(info: PluginInfo, argv: list[str] | None = None) -> str:
    """How to get a disabled plugin back, as a command that runs when there is one."""
    import shlex

    cmd = shlex.join(["gpuforge", *argv]) if argv else "gpuforge ..."
    if info.reason == "in GPUFORGE_DISABLE_PLUGINS":
        rest = [n for n in env_list("GPUFORGE_DISABLE_PLUGINS") or [] if n != info.name]
        return f"enable it for one command with `GPUFORGE_DISABLE_PLUGINS={','.join(rest)} {cmd}`"
    if info.reason == "not in GPUFORGE_LOAD_PLUGINS":
        only = [*(env_list("GPUFORGE_LOAD_PLUGINS") or []), info.name]
        return f"enable it with `GPUFORGE_LOAD_PLUGINS={','.join(only)} {cmd}` (or unset GPUFORGE_LOAD_PLUGINS)"
    if "user config" in info.reason:
        from gpuforge.core.config import config_path

        return f"remove {info.name!r} from [plugins] disabled in {config_path()}"
    if info.status == "failed":
        return f"`gpuforge plugins info {info.name}` shows why; `gpuforge doctor` suggests a fix"
    return "see `gpuforge plugins list --all`"


def _forget(registry: Registry, plugin: str) -> None:
    """Drop anything a failed plugin registered before it failed."""
    registry.commands = {k: v for k, v in registry.commands.items() if v[0] != plugin}
    registry.kernels = {k: v for k, v in registry.kernels.items() if v[0] != plugin}
    registry.backends = {k: v for k, v in registry.backends.items() if v[0] != plugin}
    registry.kernel_impls = [x for x in registry.kernel_impls if x[0] != plugin]
    registry.estimates = {k: v for k, v in registry.estimates.items() if v[0] != plugin}
    registry.tuning = {k: v for k, v in registry.tuning.items() if k != plugin}
    registry.profile_dirs = [x for x in registry.profile_dirs if x[0] != plugin]
    registry.benchmarks = [x for x in registry.benchmarks if x[0] != plugin]
    registry.demos = [x for x in registry.demos if x[0] != plugin]
    registry.doctor_checks = [x for x in registry.doctor_checks if x[0] != plugin]


@lru_cache(maxsize=1)
def _cached_registry() -> Registry:
    return load_registry()


def get_registry() -> Registry:
    """The process-wide registry, loaded once (warnings for failures are logged once)."""
    return _cached_registry()


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after changing plugin switches)."""
    _cached_registry.cache_clear()


def not_installed_message(name: str) -> str:
    return (
        f"no plugin named {name!r} is installed; a third-party plugin installs with pip "
        f"(usually `pip install gpuforge-{name}`), then `gpuforge plugins list` shows it"
    )


def plugin_info(name: str) -> PluginInfo:
    reg = get_registry()
    if name not in reg.plugins:
        raise PluginError(not_installed_message(name))
    return reg.plugins[name]
