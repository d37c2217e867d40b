"""Write a state dict as safetensors shards while it is produced, in bounded memory.

The layout transformers, bitsandbytes and vLLM read: one ``model.safetensors``, or
``model-0000N-of-0000M.safetensors`` plus ``model.safetensors.index.json``
(``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``) when the tensors fill
more than one shard. A safetensors file starts with its header (every name, dtype, shape
and offset), so a shard's tensors go to a spool file as they come and the shard is
assembled (header, then the spooled bytes, copied by the kernel) when it is full: memory
holds one tensor at a time whatever the shard size. Shard files get their final
``-of-0000M`` names when the writer closes.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DEFAULT_SHARD_BYTES = 2 * 1024**3

_NUMPY_TO_ST = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
                "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL"}
ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "U16": 2,
               "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def st_dtype(a: np.ndarray) -> str:
    name = np.dtype(a.dtype).name
    if name not in _NUMPY_TO_ST:
        raise TypeError(f"no safetensors dtype for numpy {name}")
    return _NUMPY_TO_ST[name]


def parse_size(text: str | int) -> int:
    """``2GB``, ``500MB``, ``1.5GiB`` or a byte count."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper().replace(" ", "")
    units = [("GIB", 1024**3), ("MIB", 1024**2), ("KIB", 1024), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)]
    for u, mult in units:
        if t.endswith(u):
            return int(float(t[: -len(u)]) * mult)
    return int(float(t))


class ShardWriter:
    """``w = ShardWriter(folder, max_bytes); w.add(name, array[, dtype]); ...; files = w.close()``.

    ``add`` takes a C-contiguous NumPy array; ``dtype`` overrides its safetensors dtype
    for raw bytes of another type (bf16 carried as uint16). A shard closes before a tensor
    that would push it past ``max_bytes`` (a larger tensor gets a shard of its own)."""

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict | None = None):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        if self.max_bytes < 1:
            raise ValueError("shard size must be positive")
        self.metadata = {"format": "pt", **(metadata or {})}
        self.shards: list[tuple[Path, list[str], int]] = []     # (temporary file, names, data bytes)
        self.total = 0
        self._entries: dict[str, dict] = {}
        self._spool = None
        self._spool_path: Path | None = None
        self._pos = 0

    def add(self, name: str, array: np.ndarray, dtype: str | None = None) -> None:
        a = np.ascontiguousarray(array)
        dt = dtype or st_dtype(a)
        nbytes = a.nbytes
        if name in self._entries or any(name in names for _, names, _ in self.shards):
            raise ValueError(f"tensor {name} written twice")
        if self._spool is not None and self._pos and self._pos + nbytes > self.max_bytes:
            self._close_shard()
        if self._spool is None:
            self._spool_path = self.folder / f".shard-{len(self.shards) + 1}.spool"
            self._spool = open(self._spool_path, "wb")
            self._pos = 0
        self._spool.write(memoryview(a.reshape(-1).view(np.uint8)) if nbytes else b"")
        self._entries[name] = {"dtype": dt, "shape": [int(d) for d in a.shape],
                               "data_offsets": [self._pos, self._pos + nbytes]}
        self._pos += nbytes
        self.total += nbytes

    def _close_shard(self) -> None:
        self._spool.close()
        header = json.dumps({"__metadata__": self.metadata, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)          # data 8-byte aligned, as safetensors writes it
        path = self.folder / f".shard-{len(self.shards) + 1}.safetensors"
        with open(path, "wb") as out, open(self._spool_path, "rb") as src:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            _copy(src, out, self._pos)
        self._spool_path.unlink()
        self.shards.append((path, list(self._entries), self._pos))
        self._entries, self._spool, self._spool_path, self._pos = {}, None, None, 0

    def close(self) -> list[Path]:
        """Finish the last shard, give every shard its final name, write the index when
        there is more than one; returns the files written."""
        if self._spool is not None:
            self._close_shard()
        if not self.shards:            # an empty state dict is still a valid file
            self._spool_path = self.folder / ".shard-1.spool"
            self._spool = open(self._spool_path, "wb")
            self._close_shard()
        m = len(self.shards)
        files = []
        weight_map = {}
        for i, (tmp, names, _) in enumerate(self.shards, 1):
            final = self.folder / (SINGLE_NAME if m == 1 else f"model-{i:05d}-of-{m:05d}.safetensors")
            os.replace(tmp, final)
            files.append(final)
            weight_map.update({n: final.name for n in names})
        if m > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
            files.append(self.folder / INDEX_NAME)
        return files

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _copy(src, dst, nbytes: int) -> None:
    """Copy ``nbytes`` from ``src`` to ``dst`` in the kernel where it can (no user-space buffer)."""
    dst.flush()
    left = nbytes
    try:
        while left > 0:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 1 << 30))
            if n == 0:
                break
            left -= n
    except (AttributeError, OSError):
        pass
    if left > 0:
        src.seek(nbytes - left)
        dst.seek(0, os.SEEK_END)
        while left > 0:
            chunk = src.read(min(left, 64 << 20))
            if not chunk:
                raise OSError("spool file ended early")
            dst.write(chunk)
            left -= len(chunk)
