"""Writing a mammoflow ``Generator`` in the format of StyleGAN-XL's network pickles (for tests and fixtures).

The file has the structure StyleGAN-XL's training loop writes: ``dict(G, D, G_ema, augment_pipe,
training_set_kwargs, progress)``, every generator module a persistence record (a call of
``torch_utils.persistence._reconstruct_persistent_obj`` with the class name, the module's source and its
``__dict__``: StyleGAN-XL's attribute names, numpy sizes and float64 cut-offs, the hook dictionaries, the
constructor's arguments), ``dnnlib.util.EasyDict`` containers, tensors pickled the way torch pickles them,
and the mapping network's unused ImageNet class embedding as a ``torch.nn.Embedding``. What it cannot
hold is StyleGAN-XL's source: ``module_source`` stands in for it (a placeholder, or in tests code that
must never run), so StyleGAN-XL's own loader cannot use these files; mammoflow's reader never runs it.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mammoflow.gan.stylegan_xl.arch import FIRST_CUTOFF, FIRST_STOPBAND, LayerSpec
from mammoflow.gan.stylegan_xl.generator import Generator

PLACEHOLDER_SOURCE = "# written by mammoflow: StyleGAN-XL's module source is not included\n"
CLASS_EMBEDDING = (1000, 320)  # StyleGAN-XL's ImageNet embedding (in_embeddings/tf_efficientnet_lite0.pkl)


class GlobalName:
    """A module-level name the file refers to, which need not exist where the file is written."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args, **kwargs):  # pickle's save_reduce wants a callable; this one is never called
        raise TypeError(f"{self.module}.{self.name} is only a name in a written file")


RECONSTRUCT = GlobalName("torch_utils.persistence", "_reconstruct_persistent_obj")
EASYDICT = GlobalName("dnnlib.util", "EasyDict")


class EasyDictOut(dict):
    """Written as ``dnnlib.util.EasyDict`` (NEWOBJ and SETITEMS, as pickle writes a dict subclass)."""


class PersistentOut:
    """Written as a persistence record of ``class_name`` with ``state`` as the object's ``__dict__``."""

    def __init__(self, class_name: str, state: dict, source: str):
        self.meta = {
            "type": "class",
            "version": 6,
            "module_src": source,
            "class_name": class_name,
            "state": state,
        }


class _Pickler(pickle._Pickler):  # the Python pickler: its dispatch table takes our stand-in types
    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_name(self, obj: GlobalName) -> None:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    def _save_easydict(self, obj: EasyDictOut) -> None:
        self.save(EASYDICT)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    def _save_persistent(self, obj: PersistentOut) -> None:
        self.save_reduce(RECONSTRUCT, (obj.meta,), obj=obj)

    dispatch[GlobalName] = _save_name
    dispatch[EasyDictOut] = _save_easydict
    dispatch[PersistentOut] = _save_persistent


def _module_state(module: nn.Module, children: dict, attributes: dict, init_kwargs: dict) -> dict:
    """An nn.Module's ``__dict__`` as torch 2 has it, with StyleGAN-XL's own attributes."""
    hooks = [
        "_backward_pre_hooks",
        "_backward_hooks",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    ]
    params = collections.OrderedDict(
        (k, nn.Parameter(v.detach().clone(), requires_grad=False)) for k, v in module._parameters.items()
    )
    buffers = collections.OrderedDict(
        (k, None if v is None else v.detach().clone()) for k, v in module._buffers.items()
    )
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
    }
    state.update({h: collections.OrderedDict() for h in hooks})
    state["_is_full_backward_hook"] = None
    state["_modules"] = collections.OrderedDict(children)
    state.update(attributes)
    state.update({"_init_args": (), "_init_kwargs": init_kwargs})
    return state


def _fc(layer, source: str) -> PersistentOut:
    attributes = {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "activation": layer.activation,
        "weight_gain": np.float64(layer.weight_gain),
        "bias_gain": layer.bias_gain,
    }
    kwargs = {"in_features": layer.in_features, "out_features": layer.out_features}
    return PersistentOut("FullyConnectedLayer", _module_state(layer, {}, attributes, kwargs), source)


def _layer(layer, source: str) -> PersistentOut:
    spec: LayerSpec = layer.spec
    attributes = {"w_dim": layer.w_dim}
    for key, value in vars(spec).items():
        if key in ("in_size", "out_size"):
            value = np.broadcast_to(np.asarray(value), [2])
        elif key in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width"):
            value = np.float64(value)
        if key != "name":
            attributes[key] = value
    attributes.update(
        tmp_sampling_rate=spec.tmp_sampling_rate,
        up_factor=spec.up_factor,
        up_taps=spec.up_taps,
        down_factor=spec.down_factor,
        down_taps=spec.down_taps,
        down_radial=spec.down_radial,
        padding=list(spec.padding),
    )
    kwargs = {k: v for k, v in vars(spec).items() if k != "name"}
    children = {"affine": _fc(layer.affine, source)}
    return PersistentOut("SynthesisLayer", _module_state(layer, children, attributes, kwargs), source)


def _synthesis(g: Generator, source: str) -> PersistentOut:
    arch, synthesis = g.arch, g.synthesis
    stem = arch.stages[0] if arch.stages else None
    source_layer = synthesis.input
    input_attributes = {
        "w_dim": arch.w_dim,
        "channels": arch.input.channels,
        "size": np.broadcast_to(np.asarray(arch.input.size), [2]),
        "sampling_rate": np.float64(arch.input.sampling_rate),
        "bandwidth": np.float64(arch.input.bandwidth),
    }
    fourier = PersistentOut(
        "SynthesisInput",
        _module_state(source_layer, {"affine": _fc(source_layer.affine, source)}, input_attributes, {}),
        source,
    )
    children = {
        "input": fourier,
        **{name: _layer(getattr(synthesis, name), source) for name in synthesis.layer_names},
    }
    attributes = {
        "w_dim": arch.w_dim,
        "num_ws": arch.num_ws,
        "img_resolution": arch.img_resolution,
        "img_channels": arch.img_channels,
        "num_layers": len(arch.layers) - 1,
        "num_critical": arch.num_critical,
        "margin_size": arch.margin_size,
        "output_scale": arch.output_scale,
        "num_fp16_res": arch.num_fp16_res,
        "channel_base": arch.channel_base,
        "last_stopband_rel": arch.last_stopband_rel,
        "first_stopband": FIRST_STOPBAND,
        "first_cutoff": int(FIRST_CUTOFF),
        "channel_max": arch.channel_max,
        "conv_kernel": arch.conv_kernel,
        "use_radial_filters": arch.use_radial_filters,
        "sampling_rates": np.array([float(layer.out_sampling_rate) for layer in arch.layers]),
        "layer_names": list(synthesis.layer_names),
    }
    kwargs = EasyDictOut(
        w_dim=arch.w_dim,
        img_resolution=stem.resolution if stem else arch.img_resolution,
        img_channels=arch.img_channels,
        channel_base=arch.channel_base,
        channel_max=arch.channel_max,
        num_layers=stem.layers if stem else len(arch.layers) - 1,
        conv_kernel=arch.conv_kernel,
        use_radial_filters=arch.use_radial_filters,
    )
    return PersistentOut("SynthesisNetwork", _module_state(synthesis, children, attributes, kwargs), source)


def _mapping(g: Generator, source: str, embedding: nn.Embedding) -> PersistentOut:
    mapping = g.mapping
    children = {"embed": embedding}
    children.update({f"fc{i}": _fc(getattr(mapping, f"fc{i}"), source) for i in range(mapping.num_layers)})
    attributes = {
        "z_dim": mapping.z_dim,
        "c_dim": 0,
        "w_dim": mapping.w_dim,
        "num_ws": mapping.num_ws,
        "num_layers": mapping.num_layers,
        "w_avg_beta": mapping.w_avg_beta,
        "embed_proj": None,
    }
    kwargs = {"z_dim": mapping.z_dim, "c_dim": 0, "w_dim": mapping.w_dim, "num_ws": mapping.num_ws}
    return PersistentOut("MappingNetwork", _module_state(mapping, children, attributes, kwargs), source)


def generator_record(g: Generator, source: str = PLACEHOLDER_SOURCE, seed: int = 0) -> PersistentOut:
    """``g`` as the persistence record StyleGAN-XL's G_ema is: ``SuperresGenerator`` once it has a head."""
    embedding = nn.Embedding(*CLASS_EMBEDDING)
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(CLASS_EMBEDDING, generator=torch.Generator().manual_seed(seed)))
    children = {"synthesis": _synthesis(g, source), "mapping": _mapping(g, source, embedding)}
    arch = g.arch
    attributes = {
        "z_dim": g.z_dim,
        "c_dim": 0,
        "w_dim": g.w_dim,
        "img_resolution": g.img_resolution,
        "img_channels": g.img_channels,
        "num_ws": g.num_ws,
    }
    if not g.head_layer_names:
        kwargs = EasyDictOut(z_dim=g.z_dim, w_dim=g.w_dim, c_dim=0, img_resolution=g.img_resolution)
        kwargs["img_channels"] = g.img_channels
        return PersistentOut("Generator", _module_state(g, children, attributes, kwargs), source)
    last = arch.stages[-1] if arch.stages else None
    attributes.update(
        path_stem="stem.pkl",
        up_factor=last.up_factor if last else 0,
        channel_base=arch.channel_base,
        channel_max=arch.channel_max,
        margin_size=arch.margin_size,
        last_stopband_rel=arch.last_stopband_rel,
        num_critical=arch.num_critical,
        num_fp16_res=arch.num_fp16_res,
        conv_kernel=arch.conv_kernel,
        use_radial_filters=arch.use_radial_filters,
        num_layers=len(arch.layers) - 1,
        head_layer_names=list(g.head_layer_names),
    )
    kwargs = {
        "path_stem": "stem.pkl",
        "c_dim": 0,
        "img_channels": g.img_channels,
        "img_resolution": g.img_resolution,
    }
    if last:
        kwargs.update(head_layers=last.layers, up_factor=last.up_factor)
    return PersistentOut("SuperresGenerator", _module_state(g, children, attributes, kwargs), source)


def snapshot_bytes(g: Generator, source: str = PLACEHOLDER_SOURCE, extra: dict | None = None) -> bytes:
    """A whole snapshot (``G`` and ``G_ema`` the same generator, no discriminator) as bytes; ``extra``
    entries join the top-level dict (tests put a discriminator's stand-ins there)."""
    record = generator_record(g, source)
    data = {
        "G": record,
        "D": None,
        "G_ema": record,
        "augment_pipe": None,
        "training_set_kwargs": {
            "class_name": "training.dataset.ImageFolderDataset",
            "resolution": g.img_resolution,
        },
        "progress": {
            "cur_nimg": torch.LongTensor([1000]),
            "cur_tick": torch.LongTensor([1]),
            "best_fid": 9999,
        },
        **(extra or {}),
    }
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=4).dump(data)
    return buffer.getvalue()


def write_network_pickle(g: Generator, path: str | Path, source: str = PLACEHOLDER_SOURCE) -> Path:
    path = Path(path)
    path.write_bytes(snapshot_bytes(g, source))
    return path
