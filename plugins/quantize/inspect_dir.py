"""``quantize inspect DIR``: bits per parameter, size on disk, method per layer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.quantize import model_io
from gpuforge.plugins.quantize.modules import layer_groups

CONSTANT_SUFFIXES = ("weight.quant_map", "weight.nested_quant_map", "weight_format", "g_idx")


def inspect_path(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"not found: {path}")
    if path.is_dir():
        files = model_io.safetensors_files(path)
        if not files:
            raise BadInputError(f"no .safetensors file in {path}; pass the output folder of `quantize run`")
        tensors: dict = {}
        for f in files:
            tensors.update(model_io.read_safetensors(f))
        disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        cfg_path = path / "config.json"
        qconfig = json.loads(cfg_path.read_text()).get("quantization_config") if cfg_path.is_file() else None
        if qconfig is None and (path / "quantize_config.json").is_file():
            qconfig = json.loads((path / "quantize_config.json").read_text())
    else:
        if path.suffix != ".safetensors":
            raise BadInputError(f"{path} is not a .safetensors file or a folder")
        tensors = model_io.read_safetensors(path)
        disk = path.stat().st_size
        qconfig = None
    groups = layer_groups(tensors)
    rows = []
    total_bits = total_params = 0
    for prefix, method in sorted(groups.items()):
        sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        data_bytes = sum(v.nbytes for k, v in sub.items()
                         if k != "bias" and k not in CONSTANT_SUFFIXES and ".quant_state." not in k)
        if method in ("nf4", "fp4"):
            key = next(k for k in sub if ".quant_state." in k)
            state = json.loads(bytes(sub[key]).decode())
            shape = tuple(state["shape"])
            detail = f"blocksize {state['blocksize']}" + (" + double quant" if "nested_offset" in state else "")
        elif method == "int8":
            shape = tuple(sub["weight"].shape)
            detail = "row-wise absmax (SCB)"
        else:
            n_in, out = sub["g_idx"].shape[0], sub["qweight"].shape[1]
            shape = (out, n_in)
            bits = round(sub["qweight"].shape[0] * 32 / n_in)
            method = f"gptq-{bits}bit"
            detail = f"{sub['scales'].shape[0]} groups"
        n = int(np.prod(shape))
        rows.append({"layer": prefix, "method": method, "shape": list(shape), "bits_per_param": 8 * data_bytes / n,
                     "detail": detail})
        total_bits += 8 * data_bytes
        total_params += n
    float_params = sum(v.size for k, v in tensors.items()
                       if np.issubdtype(v.dtype, np.floating) and not any(k.startswith(p + ".") for p in groups))
    return {"path": str(path), "bytes_on_disk": disk, "quantized_layers": len(rows),
            "quantized_params": total_params, "bits_per_param": total_bits / max(total_params, 1),
            "float_params": int(float_params), "quantization_config": qconfig, "layers": rows}
