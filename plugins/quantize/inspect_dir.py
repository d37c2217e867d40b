"""``quantize inspect DIR``: bits per parameter, size on disk, method per layer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.quantize import methods, model_io


def inspect_path(path: str | Path) -> dict:
    """Read lazily: shapes and sizes from the safetensors headers, a layer's small tensors
    (its JSON state) only when its description needs them; shards and index welcome."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"not found: {path}")
    if path.is_dir():
        if not model_io.safetensors_files(path):
            raise BadInputError(f"no .safetensors file in {path}; pass the output folder of `quantize run`")
        src = model_io.TensorSource(path, require_config=False)
        disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        qconfig = (src.config or {}).get("quantization_config")
        if qconfig is None and (path / "quantize_config.json").is_file():
            qconfig = json.loads((path / "quantize_config.json").read_text())
    else:
        if path.suffix != ".safetensors":
            raise BadInputError(f"{path} is not a .safetensors file or a folder")
        src = model_io.TensorSource(path)
        disk = path.stat().st_size
        qconfig = None
    tensors = src.lazy()
    groups = methods.find_layers(tensors)
    rows = []
    total_bits = total_params = 0
    for prefix, layout in sorted(groups.items()):
        sub = methods.layer_tensors(tensors, prefix)
        data_bytes = methods.data_bytes(layout, sub)
        info = methods.describe(layout, sub, qconfig or {})
        n = int(np.prod(info["shape"]))
        rows.append({"layer": prefix, "method": info["label"], "shape": list(info["shape"]),
                     "bits_per_param": 8 * data_bytes / n, "detail": info["detail"], "layout": layout.name})
        total_bits += 8 * data_bytes
        total_params += n
    float_params = sum(src.info(k).size for k in tensors
                       if src.info(k).is_float and not any(k.startswith(p + ".") for p in groups))
    return {"path": str(path), "bytes_on_disk": disk, "shards": len(src.files), "quantized_layers": len(rows),
            "quantized_params": total_params, "bits_per_param": total_bits / max(total_params, 1),
            "float_params": int(float_params), "quantization_config": qconfig, "layers": rows}
