"""The command runtime: one :class:`Run` per command, between typer and a plugin.

The core resolves the global options once (DESIGN.md "The command runtime") and hands
the plugin's service function a run object, in the open:

    from gpuforge.core.run import Run, command

    @command(app, "upscale", outputs=True)
    def upscale(run: Run, image: Path = typer.Argument(...), out: Path = typer.Option(..., "--out")):
        run.input(image)
        dst = run.output(out, kind="file")       # checks --force, inputs, writability now
        ...                                      # work on run.device; kernels via core.kernels.call
        write(dst.tmp)                           # a temporary sibling, moved into place at the end
        run.result({"out": str(out)}, f"wrote {out}")

:func:`command` adds the options every command shares (``--json``; ``--force`` when it
writes outputs; ``--seed`` / ``--threads`` where asked) to the typer signature, so a
plugin never declares them; the global ``--json``/``--seed``/``--device``/``--backend``
come from the root callback. The run then owns:

- the device: ``auto|cpu|cuda[:N]``; CUDA asked for and absent is exit 4 with one line;
  with ``NUMBA_ENABLE_CUDASIM=1`` set, ``cuda`` is simulated CUDA (kernels run on
  numba-cuda in Numba's simulator, torch stays on the CPU);
- the seed (Python, NumPy, torch), once; the thread count (torch and numba), once;
- kernel dispatch: while the run is active, :func:`gpuforge.core.kernels.call` picks
  numba-cuda on a CUDA run and numba-cpu on a CPU run (data on a CUDA device always
  goes to numba-cuda), and records which backend ran per kernel;
- the output transaction: every output is written to a temporary sibling and moved into
  place only when the whole command succeeded; on an error, Ctrl-C or SIGTERM nothing
  is left; ``--force`` replaces an earlier output but never an input (an output that is
  an input, contains one or lies inside an input folder is refused, exit 3);
- the manifest, by one rule (:func:`manifest_path`): ``manifest.json`` inside a folder
  output, ``_manifest.json`` inside a parquet dataset folder (``kind="dataset"``: pandas,
  pyarrow, Spark and DuckDB's hive reader skip names that start with ``_``, as they skip
  Spark's ``_SUCCESS``; they would fail on ``manifest.json``), ``<name>.manifest.json``
  beside a file output (the first output the command declared);
- the result: printed (or as JSON with ``--json``) after the outputs are in place.
"""
from __future__ import annotations

import functools
import inspect
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional

from gpuforge.core.errors import BadInputError, OutputExistsError, UnsupportedError, UsageError
from gpuforge.core.files import _umask, timed_stage

EXIT_TERMINATED = 143
"""SIGTERM: outputs cleaned up like on Ctrl-C, exit 128 + 15 as shells report it."""


class Terminated(BaseException):
    """Raised by the SIGTERM handler so the same clean-up as Ctrl-C runs. Not a
    KeyboardInterrupt: typer turns those into exit 130 before the CLI sees them."""


# --------------------------------------------------------------------------- devices

@dataclass(frozen=True)
class Device:
    """Where a command runs. ``kind``: ``cpu``, ``cuda`` or ``cuda-sim``."""

    kind: str
    index: int = 0
    name: str = ""

    @property
    def is_cuda(self) -> bool:
        """CUDA kernels (numba-cuda) run here, real or simulated."""
        return self.kind in ("cuda", "cuda-sim")

    @property
    def label(self) -> str:
        """What the manifest records."""
        if self.kind == "cuda":
            return f"cuda:{self.index}" + (f" ({self.name})" if self.name else "")
        if self.kind == "cuda-sim":
            return "cuda (simulated)"
        return "cpu"

    @property
    def torch(self):
        """The torch device for this run's tensors (the CPU under the simulator)."""
        import torch

        if self.kind != "cuda":
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise UnsupportedError(
                f"--device cuda:{self.index}: the GPU is there but this torch build cannot use it "
                f"(torch {torch.__version__}); install a CUDA build of torch or use --device cpu")
        return torch.device("cuda", self.index)


_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def simulator_on() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


_command_line: list[str] | None = None
GLOBAL_OPTIONS_WITH_VALUE = ("--device", "--backend", "--seed", "--log-format", "--cluster", "--scheduler",
                             "--dashboard", "--tls-ca-file", "--tls-cert", "--tls-key")
"""The root's options that take a value (the rest are flags); a test keeps it equal to
the CLI's."""


def set_command_line(args: list[str]) -> None:
    """The CLI's arguments (without the program name), for hints that repeat them."""
    global _command_line
    _command_line = list(args)


def command_line() -> list[str]:
    """The arguments the CLI was started with (without the program name)."""
    return list(sys.argv[1:] if _command_line is None else _command_line)


def on_cpu_command() -> str:
    """The user's command line with ``--device cpu`` (a global option, so it goes first):
    a hint that runs as printed."""
    import shlex

    args = command_line()
    kept, i = [], 0
    while i < len(args):  # drop the global --device; stop at the command name
        a = args[i]
        if a == "--device":
            i += 2
            continue
        if a.startswith("--device="):
            i += 1
            continue
        if a in GLOBAL_OPTIONS_WITH_VALUE:
            kept += args[i:i + 2]
            i += 2
            continue
        if not a.startswith("-"):
            break
        kept.append(a)
        i += 1
    return shlex.join(["gpuforge", "--device", "cpu", *kept, *args[i:]])


def resolve_device(requested: str) -> Device:
    """``auto|cpu|cuda[:N]`` -> :class:`Device`; exit 4 (one line) for CUDA that is not there."""
    m = _DEVICE.match(requested or "auto")
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise UsageError(f"--device {requested!r} is not one of auto, cpu, cuda, cuda:N")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "cpu":
        return Device("cpu")
    if simulator_on():
        # Numba's simulator: CUDA kernels run (slowly) on the host. `auto` never picks it.
        return Device("cuda-sim", index) if kind == "cuda" else Device("cpu")
    from gpuforge.hardware.detect import detect_gpus

    found = detect_gpus()
    if found.cpu_only or not found.gpus:
        if kind == "auto":
            return Device("cpu")
        raise UnsupportedError(f"--device {requested}: no CUDA GPU here ({found.reason}); run it on the CPU: "
                               f"`{on_cpu_command()}` (or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in "
                               "Numba's simulator)")
    if index >= len(found.gpus):
        raise UnsupportedError(f"--device {requested}: only {len(found.gpus)} CUDA device(s) here "
                               f"(cuda:0..cuda:{len(found.gpus) - 1})")
    return Device("cuda", index, found.gpus[index].name)


# --------------------------------------------------------------------------- the active run

_active: "Run | None" = None


def active_run() -> "Run | None":
    """The run of the command now executing (the kernel registry asks), or None."""
    return _active


# --------------------------------------------------------------------------- outputs

_TMP_TAG = ".gpuforge-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


FOLDER_KINDS = {"dir": "manifest.json", "dataset": "_manifest.json"}
"""Folder output kinds and the name of the manifest inside each."""


def manifest_path(output: str | Path) -> Path:
    """Where the manifest of a finished output ``output`` is (see the module's rule)."""
    p = Path(output)
    if p.is_dir():
        hidden = p / FOLDER_KINDS["dataset"]
        return hidden if hidden.exists() else p / FOLDER_KINDS["dir"]
    return p.with_name(p.name + ".manifest.json")


class Output:
    """One output of a run: checked when declared, written to :attr:`tmp`, moved to
    :attr:`path` when the command succeeds, removed when it does not."""

    def __init__(self, run: "Run", path: Path, kind: str):
        self.run, self.path, self.kind = run, Path(path), kind
        self._tmp: Path | None = None
        self._created_dirs: list[Path] = []

    @property
    def tmp(self) -> Path:
        """Where to write: a file path with the output's suffix, or an empty folder."""
        if self._tmp is None:
            parent = self.path.parent
            missing = []
            p = parent
            while not p.exists():
                missing.append(p)
                p = p.parent
            parent.mkdir(parents=True, exist_ok=True)
            self._created_dirs = list(missing)
            prefix = f".{self.path.name}{_TMP_TAG}{os.getpid()}-"
            if self.kind in FOLDER_KINDS:
                self._tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
            else:
                fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + self.path.suffix, dir=parent)
                os.close(fd)
                self._tmp = Path(name)
        return self._tmp

    @property
    def written(self) -> bool:
        return self._tmp is not None

    def commit(self, force: bool) -> None:
        if self._tmp is None:
            return
        tmp, path = self._tmp, self.path
        os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~_umask())
        if path.exists() or path.is_symlink():
            if not force:  # appeared while we worked
                raise OutputExistsError(f"output {path} appeared while the command ran; pass --force to replace it")
            old = path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-old.tmp")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        self._tmp = None

    def abort(self) -> None:
        if self._tmp is not None:
            _remove(self._tmp)
            self._tmp = None
        for d in self._created_dirs:  # deepest first: the folders we made for it
            try:
                d.rmdir()
            except OSError:
                break


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Temporary siblings of ``path`` left by a gpuforge process that no longer runs
    (kill -9, power loss); removed, and returned so the caller can say so."""
    parent = path.parent
    if not parent.is_dir():
        return []
    stale = []
    for cand in parent.glob(f".{glob_escape(path.name)}{_TMP_TAG}*"):
        m = re.match(re.escape(f".{path.name}{_TMP_TAG}") + r"(\d+)-", cand.name)
        if m and not _pid_alive(int(m.group(1))):
            _remove(cand)
            stale.append(cand)
    return stale


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# --------------------------------------------------------------------------- the run

class Run:
    """One command's resolved options, outputs, manifest and result (see the module doc)."""

    def __init__(self, command: str, *, device: Device | None, backend: str | None, seed: int | None,
                 json: bool, force: bool, threads: int | None, params: dict[str, Any], cluster: Any = None):
        self.command = command
        self.cluster_spec = cluster
        """The ``--cluster``/``--scheduler`` request (:class:`gpuforge.core.cluster.ClusterSpec`) or None."""
        self._device = device
        self.backend = backend
        self.seed = seed
        self.json = json
        self.force = force
        self.threads = threads
        self.params = dict(params)
        self.kernels: dict[str, str] = {}
        """kernel name -> backend that ran (several, comma-separated, if it changed)."""
        self.inputs: list[Path] = []
        self.outputs: list[Output] = []
        self.timings: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self._result: Any = None
        self._human: Any = None
        self._has_result = False
        self._fail_after: BaseException | None = None
        self._t0 = time.perf_counter()
        self._started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    # -- options ------------------------------------------------------------------
    @property
    def device(self) -> Device:
        if self._device is None:  # a command that declared device=False asked anyway
            from gpuforge.core.context import get_context

            self._device = resolve_device(get_context().device)
        return self._device

    @property
    def torch_device(self):
        return self.device.torch

    def seed_or(self, default: int) -> int:
        """The seed the user gave (command or global ``--seed``), else ``default``."""
        return default if self.seed is None else self.seed

    @contextmanager
    def cluster(self) -> Iterator[Any]:
        """A Dask ``Client`` when ``--cluster``/``--scheduler`` asked for one, else None
        (run here). Only commands declared ``distributed=True`` see the request."""
        if self.cluster_spec is None:
            yield None
            return
        from gpuforge.core.cluster import connect

        with connect(self.cluster_spec) as client:
            yield client

    # -- kernels --------------------------------------------------------------------
    def record_kernel(self, name: str, backend: str) -> None:
        have = self.kernels.get(name)
        if have is None:
            self.kernels[name] = backend
        elif backend not in have.split(","):
            self.kernels[name] = ",".join(sorted(have.split(",") + [backend]))

    # -- files ----------------------------------------------------------------------
    def input(self, path: str | Path, what: str = "input") -> Path:
        """Declare an input: it must exist, it is hashed into the manifest, and no
        output may replace it or lie inside it."""
        path = Path(path)
        if not path.exists():
            raise BadInputError(f"{what} not found: {path}")
        self.inputs.append(path)
        for out in self.outputs:
            self._check_overlap(out.path, path)
        return path

    def output(self, path: str | Path, kind: str = "file") -> Output:
        """Declare an output (``kind`` ``file``, ``dir``, or ``dataset``: a folder of parquet
        files other tools read as one table); checked now, before any work."""
        if kind not in ("file", *FOLDER_KINDS):
            raise ValueError(f"output kind must be 'file', 'dir' or 'dataset', not {kind!r}")
        path = Path(path)
        for inp in self.inputs:
            self._check_overlap(path, inp)
        for other in self.outputs:
            if other.path.resolve() == path.resolve():
                raise UsageError(f"{path} is named as two outputs of this command; give each its own path")
        if path.exists() or path.is_symlink():
            if not self.force:
                raise OutputExistsError(f"output {path} already exists; pass --force to replace it")
        self._check_writable(path)
        stale = remove_stale_temporaries(path)
        if stale:
            from gpuforge.core.log import get_logger

            get_logger("gpuforge.run").warning("removed temporary files of an interrupted earlier run",
                                               output=str(path), files=[p.name for p in stale])
        out = Output(self, path, kind)
        self.outputs.append(out)
        return out

    def state_file(self, path: str | Path, *, resuming: bool = False) -> Path:
        """Declare a file that must survive an interrupted run (a resume file): checked
        like an output (``--force`` unless the run resumes from it, never an input), but
        written in place with :meth:`write_state` and kept when the command fails."""
        path = Path(path)
        for inp in self.inputs:
            if not (resuming and path.resolve() == inp.resolve()):
                self._check_overlap(path, inp)
        if path.exists() and not (self.force or resuming):
            raise OutputExistsError(f"{path} already exists (state of an earlier run); pass --force to start over "
                                    "or resume from it")
        self._check_writable(path)
        remove_stale_temporaries(path)
        return path

    def write_state(self, path: str | Path, writer: Callable[[Path], None]) -> None:
        """``writer(tmp)`` writes the state to a temporary sibling, which then replaces
        ``path`` atomically: a kill mid-write keeps the previous state."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}{_TMP_TAG}{os.getpid()}-", suffix=".tmp" + path.suffix,
                                    dir=path.parent)
        os.close(fd)
        try:
            writer(Path(name))
            os.chmod(name, 0o666 & ~_umask())
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def _check_overlap(self, out: Path, inp: Path) -> None:
        o, i = out.resolve(), inp.resolve()
        if o == i:
            raise BadInputError(f"output {out} is the input {inp}; gpuforge never replaces an input "
                                "(not even with --force): choose another output path")
        if _within(i, o):
            raise BadInputError(f"output {out} contains the input {inp}; replacing it would delete the input "
                                "(not even --force does that): choose another output path")
        if inp.is_dir() and _within(o, i):
            raise BadInputError(f"output {out} lies inside the input folder {inp}; gpuforge never writes into an "
                                "input: choose a path outside it")

    @staticmethod
    def _check_writable(path: Path) -> None:
        p = path.parent
        while not p.exists():
            if p.is_symlink():  # a dangling link
                break
            p = p.parent
        if not p.is_dir():
            raise BadInputError(f"cannot create output {path}: {p} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise BadInputError(f"cannot create output {path}: no permission to write in {p}")

    def timed(self, stage: str) -> ContextManager[None]:
        """Time a stage of the command into the manifest's ``timings_s``."""
        return timed_stage(self.timings, stage)

    def progress(self, description: str, total: float | None = None):
        from gpuforge.core.progress import progress

        return progress(description, total)

    def note(self, key: str, value: Any) -> None:
        """Something more for the manifest (``key`` at its top level)."""
        self.extra[key] = value

    def result(self, result: Any, human: str | Callable[[], None] | None = None) -> None:
        """The command's result: printed after the outputs are in place (JSON with
        ``--json``, else ``human``), and kept in the manifest."""
        self._result, self._human, self._has_result = result, human, True

    def fail_after(self, error: BaseException) -> None:
        """End with ``error`` (its exit code) *after* the outputs are in place and the
        result printed: a partial success that is still a failure (one demo of several
        failed; the report is what tells the user which)."""
        self._fail_after = error

    # -- life cycle -----------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        from gpuforge.core.files import _versions, describe_input

        timings = dict(self.timings)
        timings["total"] = round(time.perf_counter() - self._t0, 4)
        data = {
            "command": self.command,
            "argv": sys.argv[1:],
            "params": self.params,
            "inputs": [describe_input(p) for p in self.inputs],
            "outputs": [str(o.path) for o in self.outputs],
            "device": self._device.label if self._device is not None else None,
            "backend": self.backend,
            "kernels": dict(sorted(self.kernels.items())),
            "seed": self.seed,
            "threads": self.threads,
            "cluster": self.cluster_spec.label if self.cluster_spec is not None else None,
            "versions": _versions(),
            "started": self._started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings_s": timings,
        }
        data.update(self.extra)
        if self._has_result and isinstance(self._result, dict):
            data["result"] = self._result
        return data

    def _commit(self) -> None:
        from gpuforge.core.output import to_json

        written = [o for o in self.outputs if o.written]
        if not written:
            return
        primary = written[0]
        text = to_json(self.manifest()) + "\n"
        if primary.kind in FOLDER_KINDS:
            (primary.tmp / FOLDER_KINDS[primary.kind]).write_text(text)
        for o in written:
            o.commit(self.force)
        if primary.kind == "file":
            from gpuforge.core.files import write_text_atomic

            write_text_atomic(manifest_path(primary.path), text, force=True)

    def _abort(self) -> None:
        for o in reversed(self.outputs):
            o.abort()

    def _emit(self) -> None:
        if not self._has_result:
            return
        from gpuforge.core.output import emit

        emit(self._result, self._human, as_json=self.json)

    def _apply_seed(self) -> None:
        if self.seed is None:
            return
        import random

        random.seed(self.seed)
        if "numpy" in sys.modules or _importable("numpy"):
            import numpy as np

            np.random.seed(self.seed % 2**32)
        if "torch" in sys.modules:
            import torch

            torch.manual_seed(self.seed)

    def _apply_threads(self) -> None:
        if self.threads is None:
            return
        from gpuforge.core.threads import set_threads

        set_threads(self.threads)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


_pending: type[BaseException] | None = None
"""The stop signal seen during the active run. A handler's exception is lost when the
signal lands in a C callback (ctypes: llvmlite's object-cache hook while Numba compiles
prints "Exception ignored" and goes on), so the run also remembers it: progress updates
and the end of the body call :func:`check_signals`, and the run stops there instead of
finishing and committing its outputs."""


def check_signals() -> None:
    """Raise the stop signal (Ctrl-C / SIGTERM) the active run saw and may have lost."""
    if _pending is not None:
        raise _pending()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    global _pending
    _pending = None

    def on_term(signum, frame):
        global _pending
        _pending = Terminated
        raise Terminated()

    def on_int(signum, frame):
        global _pending
        _pending = KeyboardInterrupt
        raise KeyboardInterrupt()

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    # Ctrl-C only where Python's own handler is in place (an ignored SIGINT stays ignored)
    prev_int = signal.getsignal(signal.SIGINT)
    if prev_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_int)
    try:
        yield
    except BaseException as exc:
        # the handler's exception can come back wrapped: raised inside a class body's
        # __set_name__ while torch was imported, Python turned it into "RuntimeError: Error
        # calling __set_name__" (exit 1 instead of 143, seen in CI); the signal is what happened
        if _pending is not None and not isinstance(exc, _pending):
            raise _pending() from exc
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if prev_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, prev_int)
        _pending = None


def execute(run: Run, body: Callable[[Run], Any]) -> Any:
    """Run ``body(run)`` as the active run: outputs committed and the result printed on
    success; everything written removed on any error, Ctrl-C or SIGTERM."""
    global _active
    previous, _active = _active, run
    try:
        with _sigterm_as_interrupt():
            run._apply_threads()
            run._apply_seed()
            value = body(run)
            check_signals()   # a signal whose exception a C callback swallowed: no commit
            run._commit()
    except BaseException:
        run._abort()
        raise
    finally:
        _active = previous
    run._emit()
    if run._fail_after is not None:
        raise run._fail_after
    return value


# --------------------------------------------------------------------------- typer glue

def _option(default, *names, **kw):
    import typer

    return typer.Option(default, *names, **kw)


def _standard_params(outputs: bool, seeded: bool, threads: bool, backend: bool = False) -> list[inspect.Parameter]:
    P = inspect.Parameter
    params = []
    if backend:
        params.append(P("gf_backend", P.KEYWORD_ONLY, annotation=Optional[str], default=_option(
            None, "--backend", help="Kernel backend (same as the global --backend).")))
    if outputs:
        params.append(P("gf_force", P.KEYWORD_ONLY, annotation=bool, default=_option(
            False, "--force", help="Replace outputs of an earlier run (never an input).")))
    if seeded:
        params.append(P("gf_seed", P.KEYWORD_ONLY, annotation=Optional[int], default=_option(
            None, "--seed", min=0, help="Random seed (same as the global --seed)."), ))
    if threads:
        params.append(P("gf_threads", P.KEYWORD_ONLY, annotation=Optional[int], default=_option(
            None, "--threads", min=1, help="CPU threads for torch and Numba (default: all cores).")))
    params.append(P("gf_json", P.KEYWORD_ONLY, annotation=bool, default=_option(
        False, "--json", help="Print the result as JSON on stdout.")))
    return params


def command(app, name: str | None = None, *, outputs: bool = False, seeded: bool = False, threads: bool = False,
            device: bool = True, distributed: bool = False, backend: bool = False, **typer_kwargs) -> Callable:
    """Register ``fn(run, ...)`` as ``app``'s command ``name``.

    ``outputs``: the command writes files (adds ``--force``). ``seeded``: it draws random
    numbers (adds a command-level ``--seed``, same as the global one). ``threads``: adds
    ``--threads``. ``device``: the device is resolved before the body runs (product
    commands: ``--device cuda`` without a GPU exits 4 at once). ``distributed``: the
    command can run on a Dask cluster (``run.cluster()``); for the others a
    ``--cluster``/``--scheduler`` request is answered with a notice that they run here.
    ``backend``: adds a command-level ``--backend`` (``run.backend``, over the global one)."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(sig.parameters.values())[1:]]
        declared = {p.name for p in own}
        clash = declared & {"json_out", "force", "seed", "device"}
        for p in own:  # a plugin must not re-declare what the runtime owns
            opt = p.default
            decls = getattr(opt, "param_decls", None) or ()
            for flag in ("--json", "--force", "--seed", "--device", "--backend", "--threads"):
                if flag in decls:
                    raise TypeError(f"{fn.__module__}.{fn.__name__} declares {flag}; the runtime adds it")
        if clash:
            raise TypeError(f"{fn.__module__}.{fn.__name__} declares {sorted(clash)}; the runtime owns them")
        extra = _standard_params(outputs, seeded, threads, backend)
        new_sig = sig.replace(parameters=own + extra, return_annotation=None)
        cmd_name = name or fn.__name__.replace("_", "-")

        @functools.wraps(fn)
        def wrapper(**kwargs):
            from gpuforge.core.context import get_context

            ctx = get_context()
            force = kwargs.pop("gf_force", False)
            seed = kwargs.pop("gf_seed", None)
            nthreads = kwargs.pop("gf_threads", None)
            chosen_backend = kwargs.pop("gf_backend", None) or ctx.backend
            as_json = kwargs.pop("gf_json", False) or ctx.json
            from gpuforge.cli.clickcompat import current_context

            path = current_context().command_path.split(" ", 1)
            label = path[1] if len(path) > 1 else cmd_name
            if ctx.cluster is not None and not distributed:
                from gpuforge.core.log import get_logger

                get_logger("gpuforge.run").warning(f"`{label}` runs on this machine only; --cluster/--scheduler "
                                                   "do not apply to it")
            run = Run(label, device=resolve_device(ctx.device) if device else None,
                      backend=chosen_backend, seed=seed if seed is not None else ctx.seed,
                      json=as_json, force=force, threads=nthreads, params=_jsonable(kwargs),
                      cluster=ctx.cluster if distributed else None)
            return execute(run, lambda r: fn(r, **kwargs))

        del wrapper.__wrapped__  # typer must see the new signature, not fn's
        wrapper.__signature__ = new_sig
        wrapper.__annotations__ = {p.name: p.annotation for p in new_sig.parameters.values()}
        wrapper.gpuforge_runtime = {"outputs": outputs, "seeded": seeded, "threads": threads, "device": device,
                                    "distributed": distributed, "backend": backend}
        app.command(cmd_name, **typer_kwargs)(wrapper)
        return fn

    return decorate


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, (list, tuple)):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        out[k] = v
    return out
