"""Reading StyleGAN-XL's ``network-snapshot-*.pkl`` files without running anything from them.

Such a file is a pickle (written with ``dill``) of ``dict(G, D, G_ema, augment_pipe, training_set_kwargs,
progress)``. The generator's classes are StyleGAN's "persistent" classes: each object is stored as a call
to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` carries the *source code*
of the class's module, its name and the object's ``__dict__``; unpickling it the usual way executes that
source. The discriminator is stored by reference to timm/torch classes, with dill-serialised code objects
for its forward hooks.

This reader is a restricted unpickler (``find_class`` decides what every name in the file becomes):

- *interpreted*: what the generator needs, each mapped to a stand-in that only builds data: the
  persistence call becomes a ``PersistentObject`` record (class name, the source's SHA-256 and length,
  the state), never compiled or executed; tensors are rebuilt from the nested ``torch.save`` archives
  StyleGAN's pickles carry them in, with ``torch.load(..., weights_only=True)``; OrderedDict, EasyDict (as
  a plain dict), set, numpy arrays, dtypes and scalars are rebuilt as data;
- *inert*: names a StyleGAN-XL snapshot carries outside its generator (torch/timm module classes, the
  projected discriminator's classes, dill's code and function builders, ``getattr``/``setattr``) become
  ``OpaqueObject`` records of the name and the arguments: nothing is imported, called or compiled;
- anything else (``os.system``, ``builtins.eval``, ``subprocess``...) is refused with one line naming the
  file and the global, before anything of it is used.

The reader therefore never imports a module named by the file, and never calls a function the file names
except the interpreted list above, whose arguments are checked.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Names whose objects may sit in a StyleGAN-XL snapshot outside the generator: kept as inert records.
INERT_PREFIXES = (
    "torch.",
    "torchvision.",
    "timm.",
    "pg_modules.",
    "feature_networks.",
    "training.",
    "torch_utils.",
    "dnnlib.",
    "dill._dill.",
    "numpy.",
)
INERT_NAMES = frozenset({"builtins.getattr", "builtins.setattr", "dill._dill", "copyreg._reconstructor"})
SAFE_BUILTIN_TYPES = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple}


class UnsafePickleError(ValueError):
    """The file names something no StyleGAN-XL network pickle holds; nothing of it was used."""


@dataclass
class PersistentObject:
    """An object of one of StyleGAN's persistent classes, as data: its class name and ``__dict__``."""

    class_name: str
    version: Any
    source_sha256: str  # of the embedded module source, which is never compiled
    source_chars: int
    state: dict

    def module(self, name: str):
        """A child module from the state's ``_modules`` (None where it is None or missing)."""
        return (self.state.get("_modules") or {}).get(name)


class OpaqueObject:
    """An instance of a class (or the result of a call) known by name only: arguments and state recorded."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args, **kwargs):
        pass  # everything was recorded by __new__ (NEWOBJ calls only __new__, REDUCE both)

    def __setstate__(self, state) -> None:
        self.state = state

    def __call__(self, *args, **kwargs) -> OpaqueObject:
        """A call of a recorded result (dill rebuilds methods as ``getattr(obj, name)(...)``): recorded."""
        return opaque_class(f"{self.qualname}()")(*args, **kwargs)

    def append(self, item) -> None:
        self.items.append(item)

    def extend(self, items) -> None:
        self.items.extend(items)

    def __setitem__(self, key, value) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


_opaque_classes: dict[str, type] = {}


def opaque_class(qualname: str) -> type:
    """A distinct inert class per name (pickle's NEWOBJ wants a class; a class made here runs nothing)."""
    if qualname not in _opaque_classes:
        _opaque_classes[qualname] = type(qualname.rsplit(".", 1)[-1], (OpaqueObject,), {"qualname": qualname})
    return _opaque_classes[qualname]


def _numpy_function(name: str):
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


# ------------------------------------------------------------------------------- interpreted names
def _reconstruct_persistent(meta) -> PersistentObject:
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "class"
        or not isinstance(meta.get("class_name"), str)
    ):
        raise UnsafePickleError("a persistent object whose record is not a class record")
    source = meta.get("module_src") or ""
    if not isinstance(source, str):
        raise UnsafePickleError(f"persistent {meta['class_name']}: its module source is not text")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistent {meta['class_name']}: its state is not a dict")
    return PersistentObject(
        meta["class_name"],
        meta.get("version"),
        hashlib.sha256(source.encode()).hexdigest(),
        len(source),
        state,
    )


def _load_from_bytes(data) -> Any:
    """A storage serialised as a nested torch.save archive: read by torch's own weights-only unpickler."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError("a tensor storage that is not bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError(f"a nested torch archive holding {type(storage).__name__}, not a storage")
    return storage


def _is_ints(values) -> bool:
    return isinstance(values, tuple | list | torch.Size) and all(isinstance(v, int) for v in values)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError("a tensor whose storage is not a tensor storage")
    if not (isinstance(offset, int) and _is_ints(size) and _is_ints(stride)) or hooks:
        raise UnsafePickleError("a tensor with malformed geometry or backward hooks")
    return torch._utils._rebuild_tensor_v2(
        storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict()
    )


def _rebuild_tensor_v1(storage, offset, size, stride):
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    if not isinstance(data, torch.Tensor) or hooks:
        raise UnsafePickleError("a parameter that is not a plain tensor")
    return data  # the values are what a network file is read for


def _reconstruct_array(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise UnsafePickleError("a numpy array of a type other than ndarray")
    return _numpy_function("_reconstruct")(np.ndarray, shape, dtype_code)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("a numpy scalar of an object dtype")
    return _numpy_function("scalar")(dtype, data)


def _dill_create_array(f, args, state, npdict=None):
    """dill's way of storing an array: the array's own reduce tuple, rebuilt by the stand-ins above."""
    if f is not _reconstruct_array or npdict:
        raise UnsafePickleError("a dill array record other than numpy's reconstruct")
    array = _reconstruct_array(*args)
    array.__setstate__(state)
    return array


def _dill_load_type(name):
    """dill names builtin types by string; containers become themselves, any other type an inert record."""
    return SAFE_BUILTIN_TYPES.get(name) or opaque_class(f"dill._dill._load_type:{name}")


class EasyDictData(dict):
    """dnnlib.util.EasyDict read as data: a plain dict (no attribute access, no code from the file)."""


INTERPRETED = {
    "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent,
    "torch.storage._load_from_bytes": _load_from_bytes,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor_v1,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "dnnlib.util.EasyDict": EasyDictData,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.object": object,
    "__builtin__.set": set,
    "__builtin__.frozenset": frozenset,
    "__builtin__.object": object,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "numpy.core.multiarray._reconstruct": _reconstruct_array,
    "numpy._core.multiarray._reconstruct": _reconstruct_array,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "dill._dill._create_array": _dill_create_array,
    "dill._dill._load_type": _dill_load_type,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, seen: collections.Counter):
        super().__init__(handle)
        self.seen = seen

    def find_class(self, module: str, name: str):
        qualname = f"{module}.{name}"
        self.seen[qualname] += 1
        if qualname in INTERPRETED:
            return INTERPRETED[qualname]
        if qualname in INERT_NAMES or qualname.startswith(INERT_PREFIXES):
            return opaque_class(qualname)
        raise UnsafePickleError(
            f"refused global {qualname!r}: a StyleGAN-XL network pickle holds no such name "
            "(nothing from the file was run)"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"a persistent id ({type(pid).__name__}): not a StyleGAN-XL network pickle")


@dataclass
class NetworkPickle:
    """What a network pickle held: its top-level entries, as records and tensors."""

    path: Path
    sha256: str
    data: dict
    globals_seen: dict[str, int] = field(default_factory=dict)

    @property
    def g_ema(self) -> PersistentObject:
        g = self.data.get("G_ema")
        if not isinstance(g, PersistentObject):
            raise ValueError(
                f"{self.path}: no StyleGAN generator under 'G_ema' "
                f"(found {type(g).__name__ if g is not None else 'nothing'})"
            )
        return g


def read_network_pickle(path: str | Path) -> NetworkPickle:
    """The file's top-level dict with every object as data (see the module doc); UnsafePickleError or
    ValueError with one line naming the file where it is not a StyleGAN network pickle."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    seen: collections.Counter = collections.Counter()
    try:
        with open(path, "rb") as handle:
            data = _RestrictedUnpickler(handle, seen).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable network pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a pickle of {type(data).__name__}, not a network snapshot's dict")
    return NetworkPickle(path, digest.hexdigest(), data, dict(seen))
