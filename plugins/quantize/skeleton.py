"""A transformers model without its weights (parameters on the meta device, buffers real),
filled from a :class:`~.model_io.TensorSource` one module at a time and emptied again.

This is what lets ``quantize run --method gptq`` hold one transformer block at a time,
``quantize kv`` analyse one layer at a time and ``finetune lora --qlora`` quantize while it
loads: the model's structure (module types, the block list, the forward code) comes from
transformers; its weights come from the source only when a module needs them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.quantize import model_io


class Skeleton:
    def __init__(self, source: model_io.TensorSource, causal: bool | None = None, cls=None):
        import torch
        from accelerate import init_empty_weights

        from gpuforge.core.hub import offline

        if source.kind != "folder":
            raise BadInputError(f"{source.path} is not a model folder (config.json + safetensors)")
        self.source = source
        cfg_dict = source.config or {}
        self.causal = model_io.is_causal(cfg_dict) if causal is None else causal
        with offline():
            from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

            try:
                cfg = AutoConfig.from_pretrained(str(source.path))
                if hasattr(cfg, "quantization_config"):
                    delattr(cfg, "quantization_config")
                cls = cls or (AutoModelForCausalLM if self.causal else AutoModel)
                with init_empty_weights(include_buffers=False):
                    self.model = cls.from_config(cfg, dtype=torch.float32)
            except Exception as exc:  # transformers raises many types for a folder it cannot read
                raise BadInputError(f"transformers cannot build the model of {source.path}: "
                                    f"{str(exc).splitlines()[0][:160]}") from None
        self.model.eval()
        self.prefix = getattr(self.model, "base_model_prefix", "") or ""
        # tied parameters (lm_head = embed_tokens) are one object under several names
        self._names_of: dict[int, list[str]] = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            self._names_of.setdefault(id(p), []).append(name)

    # --- names -------------------------------------------------------------------------------
    def key_of(self, name: str) -> str | None:
        """The checkpoint key of a parameter/buffer name, as transformers maps it
        (``base_model_prefix`` added or removed)."""
        src = self.source
        if name in src:
            return name
        if self.prefix:
            if f"{self.prefix}.{name}" in src:
                return f"{self.prefix}.{name}"
            if name.startswith(self.prefix + ".") and name[len(self.prefix) + 1:] in src:
                return name[len(self.prefix) + 1:]
        return None

    def checkpoint_name(self, module_name: str, present) -> str | None:
        """The name ``module_name`` has in the checkpoint, among ``present`` (a container of
        checkpoint-side names), ``base_model_prefix`` added or removed."""
        cands = [module_name]
        if self.prefix:
            cands += [f"{self.prefix}.{module_name}", module_name.removeprefix(self.prefix + ".")]
        return next((c for c in cands if c in present), None)

    def linear_keys(self) -> dict[str, str]:
        """{module name: checkpoint key of its weight} of every ``nn.Linear``."""
        out = {}
        for name in model_io.linear_modules(self.model):
            key = self.key_of(f"{name}.weight")
            if key:
                out[name] = key
        return out

    # --- weights -----------------------------------------------------------------------------
    def _value(self, full_name: str, param):
        import torch

        keys = [self.key_of(n) for n in self._names_of.get(id(param), [full_name])]
        key = self.key_of(full_name) or next((k for k in keys if k), None)
        if key is None:
            raise BadInputError(f"{self.source.path} lacks the tensor {full_name} the model needs")
        a = self.source.read(key)
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.float() if t.is_floating_point() else t

    def read_param(self, full_name: str):
        """A parameter's values as a float32 (or integer) torch tensor, read from the source."""
        root = self.model
        *path, last = full_name.split(".")
        for part in path:
            root = getattr(root, part)
        return self._value(full_name, getattr(root, last))

    def materialize(self, module_name: str, recurse: bool = True) -> None:
        """Load the parameters (and checkpointed buffers) of a module from the source."""
        import torch

        root = self.model.get_submodule(module_name) if module_name else self.model
        mods = root.named_modules() if recurse else [("", root)]
        for sub, mod in mods:
            base = ".".join(x for x in (module_name, sub) if x)
            for pname, p in list(mod._parameters.items()):
                if p is not None and p.is_meta:
                    mod._parameters[pname] = torch.nn.Parameter(self._value(f"{base}.{pname}" if base else pname, p),
                                                                requires_grad=False)
            for bname, b in list(mod._buffers.items()):   # persistent buffers the checkpoint holds
                full = f"{base}.{bname}" if base else bname
                if b is not None and bname not in mod._non_persistent_buffers_set and self.key_of(full):
                    mod._buffers[bname] = self._value(full, b).to(b.dtype)

    def free(self, module_name: str) -> None:
        """Put a module's parameters back on the meta device (frees their memory)."""
        mod = self.model.get_submodule(module_name)
        for sub in mod.modules():
            for pname, p in list(sub._parameters.items()):
                if p is not None and not p.is_meta:
                    sub._parameters[pname] = p.to("meta")

    def free_outside(self, keep: str) -> None:
        """Free the parameters of every module outside ``keep`` (a module name)."""
        for name, mod in self.model.named_modules():
            if name == keep or name.startswith(keep + "."):
                continue
            for pname, p in list(mod._parameters.items()):
                if p is not None and not p.is_meta:
                    mod._parameters[pname] = p.to("meta")

    def materialize_on_call(self, skip: str | None = None) -> list:
        """Load each module's own parameters the first time it runs (modules under ``skip``
        excluded); returns the hook handles."""
        handles = []
        for name, mod in self.model.named_modules():
            if skip and (name == skip or name.startswith(skip + ".")):
                continue
            if any(p.is_meta for p in mod.parameters(recurse=False)):
                def hook(m, args, name=name):
                    self.materialize(name, recurse=False)
                handles.append(mod.register_forward_pre_hook(hook))
        return handles


def load_model(folder, convert=None, causal: bool | None = None, cls=None):
    """A transformers model filled module by module from ``folder`` (a path or a
    :class:`~.model_io.TensorSource`), never whole in memory in float: ``convert(name,
    module, skeleton)`` may return a replacement for a module (e.g. an NF4 layer built from
    its weight read alone), which then takes its place instead of the float module."""
    from gpuforge.core.memory import freed_blocks_unmapped

    src = folder if isinstance(folder, model_io.TensorSource) else model_io.TensorSource(folder)
    with freed_blocks_unmapped():   # each float tensor read goes back to the OS, not into a heap hole
        sk = Skeleton(src, causal=causal, cls=cls)
        model = sk.model
        for name, mod in list(model.named_modules()):
            if not name or not any(p.is_meta for p in mod.parameters(recurse=True)):
                continue
            new = convert(name, mod, sk) if convert else None
            if new is not None:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, new)
        sk.materialize("")   # what no conversion took (a tied weight gets its own copy)
    return model
