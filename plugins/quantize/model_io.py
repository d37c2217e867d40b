"""Reading the inputs of ``quantize run/eval``: a Hugging Face model folder (config.json +
safetensors, loaded with transformers, offline) or a single ``.safetensors`` state dict;
calibration text; bad inputs as one-line errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError

DATA = Path(__file__).with_name("data")
CALIB_TEXT = DATA / "calibration.txt"
HELDOUT_TEXT = DATA / "heldout.txt"
WEIGHTS_NAME = "model.safetensors"


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder: those its ``model.safetensors.index.json`` names, else
    every ``*.safetensors`` file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = dict.fromkeys(json.loads(index.read_text())["weight_map"].values())
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise BadInputError(f"malformed {index}: {exc}") from None
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


_ST_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
             "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
             "U64": np.uint64, "BOOL": np.bool_}
DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class TensorInfo:
    __slots__ = ("name", "dtype", "shape", "file", "start", "nbytes")

    def __init__(self, name, dtype, shape, file, start, nbytes):
        self.name, self.dtype, self.shape, self.file, self.start, self.nbytes = name, dtype, shape, file, start, nbytes

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _header(path: Path) -> tuple[dict, int]:
    """(header entries, offset of the data) of a safetensors file, checked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np"):   # the library's own validation of the header
            pass
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
    except (SafetensorError, OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                            "pass a .safetensors state dict or a model folder") from None
    header.pop("__metadata__", None)
    return header, 8 + n


class TensorSource:
    """The tensors of a model folder or a ``.safetensors`` file, read one at a time.

    Only the headers are read up front. Each tensor is read with a positioned read into a
    fresh array (no memory map stays open: pages of a mapped file count in the process's
    resident set while the map lives, 1.9 GiB peak for reading a 1.5 GiB file through one
    open ``safe_open``, 0.4 GiB reopening it per tensor); bf16/fp16 are widened to float32
    only when asked, one tensor at a time."""

    def __init__(self, path: str | Path, require_config: bool = True):
        path = Path(path)
        if not path.exists():
            raise BadInputError(f"input not found: {path}")
        self.path = path
        self.config: dict | None = None
        if path.is_dir():
            if require_config and not is_model_folder(path):
                raise BadInputError(f"{path} is a folder without config.json; pass a Hugging Face model folder "
                                    "or a .safetensors file")
            self.files = safetensors_files(path)
            if not self.files:
                raise BadInputError(f"no .safetensors weights in {path} (only safetensors model folders are read)")
            missing = [f for f in self.files if not f.is_file()]
            if missing:
                raise BadInputError(f"{missing[0]} named by {path / 'model.safetensors.index.json'} is missing")
            try:
                if (path / "config.json").is_file():
                    self.config = json.loads((path / "config.json").read_text())
            except json.JSONDecodeError as exc:
                raise BadInputError(f"malformed {path / 'config.json'}: {exc}") from None
            self.kind = "folder" if self.config is not None else "file"
        else:
            if path.suffix != ".safetensors":
                raise BadInputError(f"{path} is not a .safetensors file; pass a .safetensors state dict or a model folder")
            self.files = [path]
            self.kind = "file"
        self._info: dict[str, TensorInfo] = {}
        for f in self.files:
            header, base = _header(f)
            for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                if e["dtype"] not in _ST_NUMPY:
                    raise BadInputError(f"{f}: tensor {name} has dtype {e['dtype']}, which gpuforge does not read")
                a, b = e["data_offsets"]
                self._info[name] = TensorInfo(name, e["dtype"], tuple(e["shape"]), f, base + a, b - a)

    def keys(self) -> list[str]:
        return list(self._info)

    def __contains__(self, name: str) -> bool:
        return name in self._info

    def info(self, name: str) -> TensorInfo:
        return self._info[name]

    @property
    def bytes_on_disk(self) -> int:
        return int(sum(f.stat().st_size for f in self.files))

    def raw(self, name: str) -> np.ndarray:
        """The stored values (bf16 as its uint16 bit patterns; :meth:`info` has the dtype)."""
        i = self._info[name]
        dt = np.dtype(_ST_NUMPY[i.dtype])
        with open(i.file, "rb") as fh:
            a = np.fromfile(fh, dtype=dt, count=i.nbytes // dt.itemsize, offset=i.start)
        return a.reshape(i.shape)

    def read(self, name: str) -> np.ndarray:
        """NumPy values; floating point widened to float32 (bf16 exactly, by its bits)."""
        i = self._info[name]
        a = self.raw(name)
        if i.dtype == "BF16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        if i.dtype in ("F16", "F64"):
            return a.astype(np.float32)
        return a

    def tensor(self, name: str):
        """A torch tensor in the stored dtype (bf16 stays bf16)."""
        import torch

        i = self._info[name]
        a = self.raw(name)
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.view(torch.bfloat16) if i.dtype == "BF16" else t


    def lazy(self) -> dict[str, "TensorRef"]:
        """name -> :class:`TensorRef`: shapes and sizes now, values when asked for."""
        return {k: TensorRef(self, k) for k in self._info}


class TensorRef:
    """One tensor of a :class:`TensorSource`, read when NumPy asks for its values
    (``np.asarray``); ``shape``, ``dtype``, ``ndim``, ``nbytes`` come from the header."""

    __slots__ = ("src", "name")

    def __init__(self, src: TensorSource, name: str):
        self.src, self.name = src, name

    @property
    def shape(self) -> tuple:
        return self.src.info(self.name).shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.src.info(self.name).nbytes

    @property
    def size(self) -> int:
        return self.src.info(self.name).size

    @property
    def dtype(self):
        i = self.src.info(self.name)
        return np.dtype(np.float32) if i.is_float else np.dtype(_ST_NUMPY[i.dtype])

    def __array__(self, dtype=None, copy=None):
        a = self.src.read(self.name)
        return a if dtype is None else a.astype(dtype)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a file as NumPy arrays (bf16 widened to float32); one-line errors."""
    src = TensorSource(path) if Path(path).suffix == ".safetensors" else None
    if src is None:
        raise BadInputError(f"{path} is not a .safetensors file")
    return {k: src.read(k) for k in src.keys()}


def load_input(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict | None]:
    """(kind "folder"|"file", every tensor, config or None): the whole input in memory, for
    commands that work on all of it (sparsify); the others stream through :class:`TensorSource`."""
    src = TensorSource(path)
    return src.kind, {k: src.read(k) for k in src.keys()}, src.config


def compile_regex(pattern: str | None, what: str):
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{what} {pattern!r} is not a valid regular expression: {exc}") from None


def select_targets(tensors: dict, linear_weights: set[str] | None, targets: str | None,
                   ignore: str | None) -> list[str]:
    """Names of the weights to quantize: 2-D floating tensors (in a model folder: nn.Linear
    weights) whose name matches ``targets`` and not ``ignore``. ``tensors``: name -> array
    or :class:`TensorInfo`."""
    t_re, i_re = compile_regex(targets, "--targets"), compile_regex(ignore, "--ignore")
    out = []
    for name, t in tensors.items():
        is_float = t.is_float if isinstance(t, TensorInfo) else np.issubdtype(t.dtype, np.floating)
        if t.ndim != 2 or not is_float:
            continue
        if linear_weights is not None and name not in linear_weights:
            continue
        if t_re is not None and not t_re.search(name):
            continue
        if i_re is not None and i_re.search(name):
            continue
        out.append(name)
    return out


def read_lines(path: str | Path | None, default: Path) -> list[str]:
    p = Path(path) if path else default
    if not p.is_file():
        raise BadInputError(f"text file not found: {p}")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise BadInputError(f"{p} is not UTF-8 text; pass a plain text file, one sample per line") from None
    if not lines:
        raise BadInputError(f"{p} holds no text; pass a file with one sample per line")
    return lines


def load_hf(folder: Path, config: dict | None = None):
    """(model, tokenizer) from a model folder, offline; the model in eval mode, float32."""
    from gpuforge.core.hub import offline

    with offline():
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        try:
            cfg = AutoConfig.from_pretrained(str(folder))
            causal = is_causal(config or cfg.to_dict())
            cls = AutoModelForCausalLM if causal else AutoModel
            model = cls.from_pretrained(str(folder), dtype="float32")
        except Exception as exc:  # transformers raises many types for a folder it cannot read
            raise BadInputError(f"transformers cannot load {folder}: {str(exc).splitlines()[0][:160]}") from None
        model.eval()
        tok = None
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except Exception:
            tok = None
    return model, tok


def load_tokenizer(folder: Path):
    """The folder's tokenizer (offline), or None when it has none."""
    from gpuforge.core.hub import offline

    with offline():
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except Exception:
            return None


def is_causal(config: dict) -> bool:
    return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in config.get("architectures") or [])


def linear_modules(model) -> dict[str, object]:
    import torch

    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def find_blocks(model) -> str | None:
    """Module name of the transformer blocks (``encoder.layer``, ``model.layers``...): the
    ``nn.ModuleList`` of same-class modules holding linear layers with the most parameters."""
    import torch

    best, best_n = None, 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        kinds = {type(child) for child in mod}
        if len(kinds) != 1 or not any(isinstance(m, torch.nn.Linear) for m in mod[0].modules()):
            continue
        n = sum(p.numel() for p in mod.parameters())
        if n > best_n:
            best, best_n = name, n
    return best


def forward_lines(model, tok, lines: list[str], seqlen: int, hooked: list[str], on_call) -> None:
    """Run ``model`` on each line as its own sequence (no padding tokens), calling
    ``on_call(name, inputs, output)`` whenever a module named in ``hooked`` runs; the
    hooks are removed afterwards. Calibration (GPTQ Hessians), per-layer evaluation
    inputs and the KV analysis all collect their activations this way."""
    import torch

    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: on_call(n, i, o)) for n in hooked]
    try:
        with torch.no_grad():
            for line in lines:
                model(**tokenize(tok, [line], seqlen))
    finally:
        for h in hooks:
            h.remove()


def tokenize(tok, lines: list[str], seqlen: int):
    if tok is None:
        raise BadInputError("the model folder has no tokenizer; calibration and eval need one")
    return tok(lines, padding=True, truncation=True, max_length=seqlen, return_tensors="pt")
