"""Reading a PyTorch checkpoint without executing code from it: a restricted unpickler.

A pickle names the callables it calls (``GLOBAL`` / ``STACK_GLOBAL``, then ``REDUCE`` / ``NEWOBJ`` / ``BUILD``);
every such name goes through :meth:`RestrictedUnpickler.find_class`, which returns

* a real object only from :data:`SAFE_GLOBALS` (tensor and parameter rebuilding, ``OrderedDict``, dtypes, plain
  builtin types) or a replacement that does only data work (:func:`_from_type`, :func:`_reconstructor`,
  :func:`_storage_from_bytes`);
* for any other name inside an allow-listed module (:data:`RECORD_MODULES`: the network's and the training
  framework's classes), an inert :class:`PickledObject` subclass that only stores its arguments, state and items;
* otherwise raises :class:`RefusedGlobal` (nothing has been called: refusing happens before the call).

Both formats are read: ``torch.save``'s zip archive (``torch.load`` with this module as its ``pickle_module``; the
tensors come from the archive's storages) and a plain pickle stream. TorchScript archives (which ``torch.load``
would hand to ``torch.jit.load``) are refused before anything is unpickled.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mgdm_audio.core.errors import UserInputError

#: Module prefixes whose classes and functions become inert records (never called).
RECORD_MODULES: tuple[str, ...] = (
    "main",  # MSDM's Lightning module, main.module_base.Model
    "audio_diffusion_pytorch",
    "einops",
    "einops_exts",
    "torch.nn.modules",
    "torch.nn.parameter",  # as the type argument of _rebuild_from_type_v2, which ignores it
    "torch.distributed._shard",
    "torch.distributed._sharded_tensor",
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "torchmetrics",
    "omegaconf",
    "typing",
    "pathlib",
    "numpy",
    "functools",
)


class RefusedGlobal(UserInputError):
    """The file names a callable outside the allow-list."""


class PickledObject:
    """An object of a class from the file, kept as data: the class's dotted name, the constructor arguments, the
    pickled state and any items or list entries. Nothing of the original class runs."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items, obj.entries = args, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.entries.append(value)

    def extend(self, values: Any) -> None:
        self.entries.extend(values)

    def __repr__(self) -> str:
        return f"<record of {self.qualified_name}>"

    def attributes(self) -> dict[str, Any]:
        """The pickled ``__dict__`` (a ``(dict, slots)`` state is merged)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            return {**(state[0] or {}), **(state[1] or {})}
        return state if isinstance(state, dict) else {}


_RECORD_CLASSES: dict[str, type[PickledObject]] = {}


def record_class(module: str, name: str) -> type[PickledObject]:
    key = f"{module}.{name}"
    if key not in _RECORD_CLASSES:
        _RECORD_CLASSES[key] = type(name, (PickledObject,), {"qualified_name": key})
    return _RECORD_CLASSES[key]


def _rebuild_tensor_v2(
    storage: Any, offset: int, size: Any, stride: Any, requires_grad: bool, hooks: Any, *rest: Any
) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` with the file's backward hooks dropped."""
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, collections.OrderedDict())


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any, *state: Any) -> torch.Tensor:
    """``torch._utils._rebuild_parameter(_with_state)`` without hooks or extra attributes: the tensor itself."""
    if not isinstance(data, torch.Tensor):
        raise RefusedGlobal("a parameter in the file is not built from a tensor.")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _from_type(func: Any, new_type: Any, args: tuple[Any, ...], state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` without the subclass or its state: ``func(*args)`` (``func`` passed
    the allow-list when it was read)."""
    return func(*args)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` for records only."""
    if isinstance(cls, type) and issubclass(cls, PickledObject):
        return cls()
    raise RefusedGlobal(f"the file rebuilds {cls!r} through copyreg, which the converter does not allow.")


def _storage_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` (how a plain pickle stores tensors): the bytes are a ``torch.save`` archive,
    read with this same restricted unpickler."""
    return load_checkpoint_bytes(bytes(data))


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _from_type,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_bytes,  # protocol-2 pickles write bytes as encode(str, "latin1")
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("builtins", t.__name__): t for t in (int, float, complex, str, bytes, bytearray, bool, list, tuple, dict)},
    **{("builtins", t.__name__): t for t in (set, frozenset, slice, object)},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals are :data:`SAFE_GLOBALS`, inert records or refused (module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 files (torch.save's default) spell some modules the Python 2 way (``__builtin__``)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if any(module == m or module.startswith(m + ".") for m in RECORD_MODULES) or (module, name) == (
            "torch",
            "Tensor",
        ):
            return record_class(module, name)
        raise RefusedGlobal(f"{module}.{name}")


def load(file: BinaryIO, **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler` (the ``pickle_module`` interface ``torch.load`` uses)."""
    return RestrictedUnpickler(file, **kwargs).load()


Unpickler = RestrictedUnpickler  # the pickle_module interface


def _is_torchscript(archive: zipfile.ZipFile) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def _torch_load(source: str | BinaryIO, is_path: bool) -> Any:
    # weights_only=False is what lets torch.load take a pickle_module: this module, so every global of the file
    # still goes through RestrictedUnpickler.find_class. mmap (zip archives on disk) keeps the storages on disk.
    this_module = sys.modules[__name__]
    return torch.load(source, map_location="cpu", pickle_module=this_module, weights_only=False, mmap=is_path)


def load_checkpoint_bytes(data: bytes) -> Any:
    """A ``torch.save`` archive (zip or the legacy format ``_load_from_bytes`` receives) held in memory."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if _is_torchscript(archive):
                raise RefusedGlobal("a TorchScript archive")
    return _torch_load(io.BytesIO(data), is_path=False)


def load_checkpoint(path: Path) -> tuple[Any, str]:
    """The unpickled content of ``path`` and its format (``"torch-zip"`` or ``"pickle"``), no code from the file run.

    Raises :class:`RefusedGlobal` (the offending name as its message) for a name outside the allow-list and
    :class:`UserInputError` for a file that is not a readable pickle or archive.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if _is_torchscript(archive):
                    raise RefusedGlobal("a TorchScript archive")
            return _torch_load(str(path), is_path=True), "torch-zip"
        with open(path, "rb") as f:
            obj = load(f)
    except RefusedGlobal:
        raise
    except Exception as err:  # a corrupt or hostile file can fail anywhere inside the unpickler
        raise UserInputError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}).") from None
    if isinstance(obj, int):  # torch's legacy (pre-1.6) format starts with a magic number
        try:
            return _torch_load(str(path), is_path=False), "torch-legacy"
        except RefusedGlobal:
            raise
        except Exception as err:
            raise UserInputError(
                f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})."
            ) from None
    return obj, "pickle"
