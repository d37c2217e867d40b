"""The command runtime (core/run.py): options, devices, the output transaction, seeds,
kernel dispatch and its record, SIGTERM/Ctrl-C clean-up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import typer

from gpuforge.core.context import Context, set_context
from gpuforge.core.errors import BadInputError, OutputExistsError, UnsupportedError, UsageError
from gpuforge.core.run import Device, Run, active_run, command, execute, remove_stale_temporaries, resolve_device
from gpuforge.core.safepath import python_argv


def make_run(**kw) -> Run:
    args = dict(device=Device("cpu"), backend=None, seed=None, json=False, force=False, threads=None, params={})
    args.update(kw)
    return Run("test cmd", **args)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".gpuforge-" in p.name)


# ---------------------------------------------------------------- the typer glue

def test_command_adds_the_shared_options_and_hides_run():
    app = typer.Typer()

    @command(app, "go", outputs=True, seeded=True, threads=True)
    def go(run: Run, n: int = typer.Option(1, "--n")):
        run.result({"n": n, "seed": run.seed, "force": run.force, "threads": run.threads})

    params = {p.name: p for p in typer.main.get_command(app).params}
    flags = {o for p in params.values() for o in p.opts}
    assert {"--n", "--json", "--force", "--seed", "--threads"} <= flags
    assert "run" not in params


def test_command_without_outputs_has_no_force():
    app = typer.Typer(add_completion=False)

    @command(app, "look", device=False)
    def look(run: Run):
        pass

    flags = {o for p in typer.main.get_command(app).params for o in p.opts if "completion" not in o}
    assert flags == {"--json"}


@pytest.mark.parametrize("flag", ["--json", "--force", "--seed", "--device", "--threads"])
def test_a_plugin_cannot_redeclare_what_the_runtime_owns(flag):
    app = typer.Typer()
    with pytest.raises(TypeError, match="runtime"):
        @command(app, "bad")
        def bad(run: Run, x: bool = typer.Option(False, flag)):
            pass


def test_options_reach_the_run(capsys):
    from typer.testing import CliRunner

    set_context(Context(device="cpu", seed=None))
    app = typer.Typer()

    @command(app, "go", outputs=True, seeded=True)
    def go(run: Run, n: int = typer.Option(1, "--n")):
        run.result({"n": n, "seed": run.seed, "force": run.force, "device": run.device.label})

    @app.callback()
    def root():
        pass

    res = CliRunner().invoke(app, ["go", "--n", "3", "--seed", "7", "--force", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"n": 3, "seed": 7, "force": True, "device": "cpu"}
    set_context(Context(device="cpu", seed=11))
    res = CliRunner().invoke(app, ["go", "--json"])
    assert json.loads(res.stdout)["seed"] == 11       # the global --seed when the command has none
    set_context(Context())


# ---------------------------------------------------------------- devices

def test_device_resolution_on_this_machine(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    from gpuforge.hardware.detect import detect_gpus

    assert resolve_device("cpu") == Device("cpu")
    if detect_gpus().cpu_only:
        assert resolve_device("auto").kind == "cpu"
        with pytest.raises(UnsupportedError) as err:
            resolve_device("cuda")
        assert "\n" not in str(err.value) and "--device cpu" in str(err.value)
    with pytest.raises(UsageError):
        resolve_device("gpu")
    with pytest.raises(UsageError):
        resolve_device("cpu:1")


def test_simulated_cuda(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    dev = resolve_device("cuda")
    assert dev.kind == "cuda-sim" and dev.is_cuda and dev.label == "cuda (simulated)"
    assert resolve_device("auto").kind == "cpu"      # auto never picks the slow simulator


def test_cuda_without_gpu_exits_4_with_one_line(run_cli, tmp_path):
    from gpuforge.hardware.detect import detect_gpus

    if not detect_gpus().cpu_only:
        pytest.skip("this machine has a GPU")
    r = run_cli("--device", "cuda", "superres", "photos", "--out", str(tmp_path / "p"))
    assert r.code != 4   # photos does not compute: it never resolves the device
    r = run_cli("--device", "cuda", "superres", "upscale", str(tmp_path / "missing.png"), "--scale", "3",
                "--out", str(tmp_path / "o.png"))
    assert r.code == 4, r
    assert len(r.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in r.stderr


# ---------------------------------------------------------------- the output transaction

def test_outputs_appear_only_when_the_command_succeeds(tmp_path):
    run = make_run()

    def body(r):
        f = r.output(tmp_path / "a.txt")
        f.tmp.write_text("x")
        d = r.output(tmp_path / "d", kind="dir")
        (d.tmp / "inner.txt").write_text("y")
        assert not (tmp_path / "a.txt").exists()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        execute(run, body)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_manifest_rule_file_beside_folder_inside(tmp_path):
    run = make_run(params={"k": 1})

    def body(r):
        r.input(tmp_path / "in.txt")
        r.output(tmp_path / "d", kind="dir").tmp.joinpath("x").write_text("x")
        r.output(tmp_path / "b.txt").tmp.write_text("b")
        r.result({"ok": True})

    (tmp_path / "in.txt").write_text("input")
    execute(run, body)
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["device"] == "cpu" and m["params"] == {"k": 1} and m["result"] == {"ok": True}
    assert m["inputs"][0]["sha256"] and m["outputs"] == [str(tmp_path / "d"), str(tmp_path / "b.txt")]
    assert (tmp_path / "b.txt").read_text() == "b"
    assert not (tmp_path / "b.txt.manifest.json").exists()   # one manifest, with the first output

    run2 = make_run()
    execute(run2, lambda r: r.output(tmp_path / "c.txt").tmp.write_text("c"))
    assert json.loads((tmp_path / "c.txt.manifest.json").read_text())["outputs"] == [str(tmp_path / "c.txt")]
    assert leftovers(tmp_path) == []


def test_force_replaces_an_earlier_output_only(tmp_path):
    (tmp_path / "o.txt").write_text("old")
    with pytest.raises(OutputExistsError):
        execute(make_run(), lambda r: r.output(tmp_path / "o.txt"))
    execute(make_run(force=True), lambda r: r.output(tmp_path / "o.txt").tmp.write_text("new"))
    assert (tmp_path / "o.txt").read_text() == "new"


@pytest.mark.parametrize("layout", ["same-file", "folder-holds-input", "inside-input-folder"])
def test_force_never_touches_an_input(tmp_path, layout):
    src = tmp_path / "data"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights")
    inp, out = {
        "same-file": (src / "model.safetensors", src / "model.safetensors"),
        "folder-holds-input": (src / "model.safetensors", src),
        "inside-input-folder": (src, src / "q"),
    }[layout]
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    for order in ("input-first", "output-first"):
        def body(r):
            if order == "input-first":
                r.input(inp)
                r.output(out, kind="dir" if out.suffix == "" else "file")
            else:
                r.output(out, kind="dir" if out.suffix == "" else "file")
                r.input(inp)

        with pytest.raises(BadInputError, match="input"):
            execute(make_run(force=True), body)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


def test_unwritable_outputs_are_refused_before_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInputError, match="is a file"):
        execute(make_run(), lambda r: r.output(tmp_path / "afile" / "out.txt"))
    if os.geteuid() == 0:
        return  # root may write anywhere; the permission case cannot be shown here
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(BadInputError, match="permission"):
        execute(make_run(), lambda r: r.output(ro / "out.txt"))


def test_new_parent_folders_are_removed_on_failure(tmp_path):
    def body(r):
        r.output(tmp_path / "a" / "b" / "o.txt").tmp.write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        execute(make_run(), body)
    assert not (tmp_path / "a").exists()


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path):
    out = tmp_path / "o.png"
    dead = tmp_path / ".o.png.gpuforge-999999999-abc.tmp.png"
    live = tmp_path / f".o.png.gpuforge-{os.getpid()}-abc.tmp.png"
    other = tmp_path / ".other.png.gpuforge-999999999-abc.tmp.png"
    for p in (dead, live, other):
        p.write_text("x")
    assert remove_stale_temporaries(out) == [dead]
    assert live.exists() and other.exists() and not dead.exists()


def test_state_files_survive_failure_and_respect_force(tmp_path):
    state = tmp_path / "m.resume.pt"

    def body(r):
        p = r.state_file(state)
        r.write_state(p, lambda tmp: tmp.write_text("step 5"))
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        execute(make_run(), body)
    assert state.read_text() == "step 5"
    with pytest.raises(OutputExistsError):
        execute(make_run(), lambda r: r.state_file(state))
    execute(make_run(), lambda r: r.state_file(state, resuming=True))
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- seeds, threads, kernels

def test_seed_is_applied_once_to_python_numpy_and_torch():
    import random

    import numpy as np
    import torch

    def draw(r):
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    a = execute(make_run(seed=5), draw)
    b = execute(make_run(seed=5), draw)
    c = execute(make_run(seed=6), draw)
    assert a == b and a != c


def test_threads_are_set_for_torch_and_numba():
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    try:
        execute(make_run(threads=1), lambda r: None)
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def test_kernels_dispatch_by_run_device_and_are_recorded():
    import numpy as np

    from gpuforge.core.kernels import call

    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    run = make_run()
    execute(run, lambda r: call("kernels.blockwise_absmax", x, 64))
    assert run.kernels == {"kernels.blockwise_absmax": "numba-cpu"}
    assert active_run() is None
    forced = make_run(backend="reference")
    execute(forced, lambda r: call("kernels.blockwise_absmax", x, 64))
    assert forced.kernels == {"kernels.blockwise_absmax": "reference"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed exception
@pytest.mark.parametrize("sig,exc", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_a_signal_whose_exception_a_c_callback_swallowed_still_stops_the_run(tmp_path, sig, exc):
    """Seen in CI: SIGTERM landed while Numba compiled, inside llvmlite's ctypes callback;
    Python printed "Exception ignored" and the upscale finished with exit 0. The run
    remembers the signal: the next progress update raises it, and so does the end of the
    body, and nothing is committed."""
    import ctypes

    from gpuforge.core import run as run_mod

    callback = ctypes.CFUNCTYPE(None)(lambda: os.kill(os.getpid(), sig))
    reached = []

    def body(r, tick):
        r.output(tmp_path / "o.txt").tmp.write_text("x")
        callback()          # the handler's exception is lost here ("Exception ignored ...")
        reached.append("after the callback")
        if tick:
            with r.progress("work", total=2) as bar:
                bar.advance()
                reached.append("after a progress update")

    for tick in (True, False):
        reached.clear()
        with pytest.raises(BaseException) as e:
            execute(make_run(), lambda r: body(r, tick))
        assert type(e.value).__name__ == exc
        assert reached == ["after the callback"]     # stopped at the update, or at the end of the body
        assert list(tmp_path.iterdir()) == []         # nothing committed, the temporary gone
        assert run_mod._pending is None               # the next run starts clean
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("sig,exc", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_a_signal_raised_inside_code_that_wraps_it_still_stops_the_run(tmp_path, sig, exc):
    """Seen in CI: SIGTERM landed while torch was imported, inside a descriptor's
    __set_name__; Python wrapped the handler's exception in "RuntimeError: Error calling
    __set_name__" and the command exited 1 (internal error) instead of 143."""
    class KillsOnSetName:
        def __set_name__(self, owner, name):
            os.kill(os.getpid(), sig)

    def body(r):
        r.output(tmp_path / "o.txt").tmp.write_text("x")
        type("Imported", (), {"attr": KillsOnSetName()})

    with pytest.raises(BaseException) as e:
        execute(make_run(), body)
    assert type(e.value).__name__ == exc
    assert isinstance(e.value.__cause__, RuntimeError)   # what Python made of it
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- signals, end to end

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"p{i}.png")
    return d


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_clean_up_and_exit_with_the_documented_code(isolated_env, photos, tmp_path, sig, code):
    out = tmp_path / "m.safetensors"
    proc = subprocess.Popen([*python_argv(), "-m", "gpuforge.cli", "superres", "train", str(photos), "--scale", "2",
                             "--steps", "100000", "--epoch-steps", "100000", "--patch", "8", "--batch", "4",
                             "--out", str(out)], env=isolated_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not leftovers(tmp_path):
            time.sleep(0.2)
        assert leftovers(tmp_path), "the command never started writing"
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:  # a failed run must not leave a 100000-step training behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
