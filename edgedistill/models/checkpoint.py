"""Reading checkpoint files without running code in them.

`.pth/.pt` go through `torch.load(weights_only=True)`: a pickle that needs a global (a class, a
function such as os.system) is refused and named. Wrapped checkpoints ({"state_dict": ...},
{"netG": ...}, DataParallel's "module." prefix) are unwrapped.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.hashing import file_sha256  # noqa: F401  (loading imports it from here)

STATE_DICT_KEYS = (
    "state_dict",
    "model",
    "netG",
    "generator",
    "G",
    "g_ema",
    "params_ema",
    "params",
    "model_state",
)


def require_file(path: Path, what: str = "checkpoint") -> Path:
    if not path.exists():
        raise EdgeDistillError(f"{what} not found: {path} — check the path")
    if path.is_dir():
        raise EdgeDistillError(f"{what} {path} is a directory; give the file inside it")
    return path


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a code/ folder; torch.save zips have only data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n for n in zf.namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from .safetensors or a weights-only pickle."""
    require_file(path)
    if path.stat().st_size == 0:
        raise EdgeDistillError(f"{path} is empty (0 bytes): re-save or re-download it")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise EdgeDistillError(f"{path} is not a readable safetensors file ({exc}); re-save it") from None
    try:
        with (
            warnings.catch_warnings()
        ):  # damaged bytes read as an odd pickle protocol: the error says it once
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global|GLOBAL)[:\s]+(?:GLOBAL\s+)?([\w.]+)", str(exc))
        code = found.group(1) if found else _code_global(path)
        if code:
            raise EdgeDistillError(
                f"refusing to load {path}: unpickling it would run code ({code}). "
                "Re-save the weights alone: torch.save(model.state_dict(), ...) or safetensors"
            ) from None
        # not torch's own text: it suggests weights_only=False, which would run whatever the file holds
        raise EdgeDistillError(
            f"{path} is not a readable PyTorch checkpoint (damaged pickle data); re-save it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise EdgeDistillError(
            f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)}); re-save it"
        ) from None
    except Exception:
        raise EdgeDistillError(
            f"{path} is not a readable PyTorch checkpoint (damaged pickle data); re-save it"
        ) from None
    return unwrap_state_dict(obj, path)


_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "_codecs.encode")


def _code_global(path: Path) -> str | None:
    """The first importable name a pickle would call, read off its opcodes without running it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
        strings: list[str] = []
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "GLOBAL":
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if not name.startswith(_TENSOR_GLOBALS):
                return name
    except Exception:  # an unreadable stream is reported as corrupt by the caller
        return None
    return None


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, dict):
            inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        raise EdgeDistillError(
            f"{path} holds no state dict (found {type(obj).__name__}"
            f"{' with keys ' + ', '.join(map(str, list(obj)[:5])) if isinstance(obj, dict) else ''}); "
            "save model.state_dict()"
        )
    state = dict(obj)  # type: ignore[arg-type]
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].split(". ")[0][:160] if text else type(exc).__name__  # torch adds paragraphs of advice
