"""Run a model's transformer blocks one at a time on calibration text, holding one block's
weights and the activations between blocks (GPTQ's sequential scheme, Frantar et al.
2023 sec. 4 and the reference implementation's ``llama_sequential``).

- The inputs of the first block are caught: the model runs on each sample with block 0
  replaced by a module that records its arguments and stops the forward (modules before
  the blocks, e.g. embeddings, load their weights when first called).
- :meth:`BlockRunner.blocks` yields each block with its weights loaded; the caller
  collects statistics with hooks while :meth:`BlockRunner.run` feeds it every sample,
  may change its weights (GPTQ writes the quantized ones back), then calls
  :meth:`BlockRunner.advance`, which runs the block once more to make the next block's
  inputs and frees the block.
- :meth:`BlockRunner.tail` runs what follows the blocks (final norm, pooler, head) on the
  last block's outputs, for statistics of layers there.
- Activations beyond a memory budget go to ``.npy`` files in a scratch folder (NumPy's
  format for plain arrays; nothing is pickled).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UnsupportedError
from gpuforge.plugins.quantize import model_io
from gpuforge.plugins.quantize.skeleton import Skeleton


class _Stop(Exception):
    pass


class ActivationStore:
    """A list of tensors kept in memory up to ``budget`` bytes, the rest in files."""

    def __init__(self, folder: Path, budget: int, tag: str):
        self.folder, self.budget, self.tag = folder, int(budget), tag
        self.items: list = []
        self.in_memory = 0
        self.spilled = 0

    def append(self, t) -> None:
        import torch

        t = t.detach()
        n = t.numel() * t.element_size()
        if self.in_memory + n <= self.budget:
            self.items.append(t.clone() if t.data_ptr() else t)
            self.in_memory += n
        else:
            path = self.folder / f"{self.tag}-{len(self.items)}.npy"
            np.save(path, t.to(torch.float32).numpy(), allow_pickle=False)
            self.items.append(path)
            self.spilled += n

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        x = self.items[i]
        return torch.from_numpy(np.load(x, allow_pickle=False)) if isinstance(x, Path) else x

    def clear(self) -> None:
        for x in self.items:
            if isinstance(x, Path):
                x.unlink(missing_ok=True)
        self.items, self.in_memory = [], 0


class _Catcher:
    """Stands in for block 0: records (args, kwargs) and stops the forward. Attribute reads
    fall through to the real block (some models read e.g. ``attention_type`` from it)."""

    def __new__(cls, block, seen: list):
        import torch

        class Catcher(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = block

            def __getattr__(self, name):
                try:
                    return super().__getattr__(name)
                except AttributeError:
                    return getattr(self._modules["inner"], name)

            def forward(self, *args, **kwargs):
                seen.append((args, kwargs))
                raise _Stop

        return Catcher()


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise:
    block after block, a few MB of fragments per block stayed resident)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


class BlockRunner:
    def __init__(self, skeleton: Skeleton, tok, lines: list[str], seqlen: int, memory_budget: int,
                 scratch: Path | None = None):
        self.sk, self.model = skeleton, skeleton.model
        self.block_name = model_io.find_blocks(self.model)
        if self.block_name is None:
            raise UnsupportedError(f"no transformer blocks (a ModuleList of identical layers) found in "
                                   f"{type(self.model).__name__}; block-by-block calibration needs them")
        self.blocks = self.model.get_submodule(self.block_name)
        self.tok, self.lines, self.seqlen = tok, lines, seqlen
        self._scratch_own = scratch is None
        self.scratch = Path(tempfile.mkdtemp(prefix="gpuforge-acts-")) if scratch is None else scratch
        self.budget = int(memory_budget)
        self.kwargs: list[dict] = []
        self.extra_args: list[tuple] = []
        self.inputs = ActivationStore(self.scratch, self.budget // 2, "in0")
        self.out_is_tuple = False
        self.spilled_bytes = 0
        self._hooks = self.sk.materialize_on_call(skip=self.block_name)
        self._catch()
        self.sk.free_outside(self.block_name)   # embeddings are needed again only by tail()

    def _encodings(self):
        for line in self.lines:
            yield model_io.tokenize(self.tok, [line], self.seqlen)

    def _call_model(self, enc) -> None:
        kw = dict(enc)
        if self.sk.causal:
            kw["use_cache"] = False
        self.model(**kw)

    def _catch(self) -> None:
        import torch

        seen: list = []
        real = self.blocks[0]
        self.blocks[0] = _Catcher(real, seen)
        try:
            with torch.no_grad():
                for enc in self._encodings():
                    try:
                        self._call_model(enc)
                    except _Stop:
                        pass
        finally:
            self.blocks[0] = real
        if len(seen) != len(self.lines):
            raise UnsupportedError(f"the forward of {type(self.model).__name__} did not reach its first block")
        for args, kwargs in seen:
            hidden = args[0] if args else kwargs.pop("hidden_states")
            self.inputs.append(hidden)
            self.extra_args.append(tuple(args[1:]))
            self.kwargs.append(kwargs)

    def block_names(self) -> list[str]:
        return [f"{self.block_name}.{i}" for i in range(len(self.blocks))]

    def run(self, i: int, on_output=None) -> None:
        """Feed every sample through block ``i`` (its weights loaded)."""
        import torch

        block = self.blocks[i]
        with torch.no_grad():
            for j in range(len(self.inputs)):
                out = block(self.inputs[j], *self.extra_args[j], **self.kwargs[j])
                if on_output:
                    on_output(j, out)

    def load(self, i: int) -> None:
        self.sk.materialize(f"{self.block_name}.{i}")

    def advance(self, i: int) -> None:
        """Run block ``i`` (as it is now) to make the next inputs, then free it."""
        nxt = ActivationStore(self.scratch, self.budget // 2, f"in{i + 1}")

        def keep(j, out):
            self.out_is_tuple = isinstance(out, (tuple, list))
            nxt.append(_first(out))

        self.run(i, keep)
        self.spilled_bytes = max(self.spilled_bytes, self.inputs.spilled + nxt.spilled)
        self.inputs.clear()
        self.inputs = nxt
        self.sk.free(f"{self.block_name}.{i}")
        release_memory()

    def tail(self, on_sample=None) -> None:
        """Run the model after its blocks on the last block's outputs (the caller's forward
        hooks on modules there see their real inputs); ``on_sample(j, None)`` after each."""
        import torch

        outputs, is_tuple = self.inputs, self.out_is_tuple
        state = {"j": 0}

        class Replay(torch.nn.Module):
            def forward(self, *args, **kwargs):
                h = outputs[state["j"]]
                return (h,) if is_tuple else h

        parent, _, attr = self.block_name.rpartition(".")
        owner = self.model.get_submodule(parent) if parent else self.model
        real = getattr(owner, attr)
        setattr(owner, attr, torch.nn.ModuleList([Replay()]))
        try:
            with torch.no_grad():
                for j, enc in enumerate(self._encodings()):
                    state["j"] = j
                    self._call_model(enc)
                    if on_sample:
                        on_sample(j, None)
        finally:
            setattr(owner, attr, real)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self.inputs.clear()
        if self._scratch_own:
            shutil.rmtree(self.scratch, ignore_errors=True)


def check_text_model(skeleton: Skeleton, tok) -> None:
    if tok is None:
        raise BadInputError(f"{skeleton.source.path} has no tokenizer; calibration needs one")
