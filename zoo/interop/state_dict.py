"""Reading PyTorch state dicts without executing code from the file.

- `.safetensors` is read with `safetensors.numpy` (no torch needed).
- `.pth` / `.pt` / `.bin` are read with `torch.load(weights_only=True)`, which
  refuses pickled code (only tensors and plain containers load).
- A dict of tensors / arrays (e.g. `torch_model.state_dict()`) is accepted as is.

Checkpoints that wrap the weights (`{"state_dict": ...}`, `{"model": ...}`,
as timm's and torchvision's training scripts write) are unwrapped, and the
`module.` prefix of DataParallel is stripped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

StateDict = dict[str, np.ndarray]
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Keys under which training checkpoints nest the model's weights.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch.Tensor; torch is imported only if one is given
        tensor = value.detach().cpu()
        if not tensor.is_floating_point() or tensor.dtype.itemsize != 4:
            tensor = tensor.float() if tensor.is_floating_point() else tensor
        return tensor.numpy()
    raise ValueError(f"state dict entry {name!r} is a {type(value).__name__}, expected a "
                     "torch.Tensor or a numpy array")


def _unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in WRAPPER_KEYS:
        if key in data and isinstance(data[key], Mapping):
            return data[key]
    return data


def _load_torch_file(path: Path) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError as error:
        raise ValueError(
            f"reading {str(path)!r} needs PyTorch (pip install 'zoo[torch]'); a .safetensors "
            "file can be read without it") from error
    # weights_only=True: the unpickler accepts tensors and containers only, never code.
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> StateDict:
    """A flat {torch key: numpy array} dict from a file or an in-memory state dict.

    Args:
      source: a `.safetensors`, `.pth`, `.pt` or `.bin` file, or a mapping of
        names to torch tensors / numpy arrays.

    Returns:
      Keys in the file's order (PyTorch's definition order), values as numpy
      arrays; floating tensors that are not float32 are converted to float32
      when they come from torch.
    """
    if isinstance(source, Mapping):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"weights file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.numpy import load_file

            data = load_file(str(path))
        elif suffix in TORCH_SUFFIXES:
            data = _load_torch_file(path)
        else:
            raise ValueError(
                f"weights file {str(path)!r} has suffix {suffix!r}; expected one of "
                f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}")
        if not isinstance(data, Mapping):
            raise ValueError(f"{str(path)!r} holds a {type(data).__name__}, expected a state dict")
    data = _unwrap(data)
    strip = all(key.startswith("module.") for key in data) and len(data) > 0
    return {(key[len("module."):] if strip else key): _to_numpy(key, value)
            for key, value in data.items()}
