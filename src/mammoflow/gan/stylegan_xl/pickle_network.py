"""A mammoflow ``Generator`` from a StyleGAN-XL network pickle (as ``pickle_reader`` reads it as data).

The layer table comes from the file: each layer's recorded widths, sizes, sampling rates, cut-offs and
transition bands; the up/down factors, filter lengths and padding StyleGAN-XL recorded beside them are
checked against what ``arch`` derives from those rates (a file that disagrees is refused, not guessed
at). The weights and buffers (filters included) load with strict names and shapes; of ``G_ema``'s state
only ``mapping.embed.weight`` is left out, the ImageNet class embedding an unconditional network never
uses. How the network grew (stem, heads) is recovered where the layer table allows: the stem's and the
last head's settings are recorded in the file, earlier heads are found by rebuilding candidate tables.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mammoflow.gan.stylegan_xl.arch import (
    HEAD_UP_FACTORS,
    NUM_CRITICAL,
    ArchSpec,
    InputSpec,
    LayerSpec,
    Stage,
    cut_critical,
    grow_arch,
    network_stem_arch,
)
from mammoflow.gan.stylegan_xl.generator import Generator
from mammoflow.gan.stylegan_xl.pickle_reader import PersistentObject, read_network_pickle

GENERATOR_CLASSES = ("Generator", "SuperresGenerator")
UNUSED_EMBEDDING = "mapping.embed."


@dataclass
class PickleInfo:
    """Where a generator came from, for summaries and logs."""

    path: str
    sha256: str
    class_name: str
    resolution: int
    channels: int
    stages: list[dict]  # [] where the file does not allow recovering them
    kimg: float | None  # training progress the file records, if any
    discriminator: str | None  # the class name of the stored D, if any (not used)

    def to_dict(self) -> dict:
        return dict(vars(self))


def _attr(record: PersistentObject, name: str, path):
    if name not in record.state:
        raise ValueError(f"{path}: {record.class_name} has no '{name}': not a StyleGAN-XL generator")
    value = record.state[name]
    return value.item() if isinstance(value, np.generic) else value


def _side(value, what: str, path) -> int:
    """A recorded size ([w, h] array or int) as one side; StyleGAN-XL's generators are square."""
    sides = np.broadcast_to(np.asarray(value), [2])
    if sides[0] != sides[1]:
        raise ValueError(f"{path}: {what} is {list(sides)}, not square")
    return int(sides[0])


def _layer_spec(name: str, layer: PersistentObject, path) -> LayerSpec:
    a = lambda key: _attr(layer, key, path)  # noqa: E731
    spec = LayerSpec(
        name=name,
        is_torgb=bool(a("is_torgb")),
        is_critically_sampled=bool(a("is_critically_sampled")),
        use_fp16=bool(a("use_fp16")),
        in_channels=int(a("in_channels")),
        out_channels=int(a("out_channels")),
        in_size=_side(a("in_size"), f"{name}.in_size", path),
        out_size=_side(a("out_size"), f"{name}.out_size", path),
        in_sampling_rate=int(a("in_sampling_rate")),
        out_sampling_rate=int(a("out_sampling_rate")),
        in_cutoff=float(a("in_cutoff")),
        out_cutoff=float(a("out_cutoff")),
        in_half_width=float(a("in_half_width")),
        out_half_width=float(a("out_half_width")),
        conv_kernel=int(a("conv_kernel")),
        filter_size=int(a("filter_size")),
        lrelu_upsampling=int(a("lrelu_upsampling")),
        use_radial_filters=bool(a("use_radial_filters")),
        conv_clamp=None if a("conv_clamp") is None else float(a("conv_clamp")),
        magnitude_ema_beta=float(a("magnitude_ema_beta")),
    )
    derived = {
        "up_factor": spec.up_factor,
        "down_factor": spec.down_factor,
        "up_taps": spec.up_taps,
        "down_taps": spec.down_taps,
        "padding": list(spec.padding),
    }
    for key, value in derived.items():
        recorded = layer.state.get(key)
        recorded = [int(v) for v in recorded] if key == "padding" and recorded is not None else recorded
        if recorded is not None and recorded != value:
            raise ValueError(
                f"{path}: layer {name} records {key} {recorded}, its sampling rates give {value}: "
                "not the StyleGAN3/StyleGAN-XL layer mammoflow implements"
            )
    return spec


def arch_from_pickle(g: PersistentObject, path) -> ArchSpec:
    """The layer table a generator record describes (see the module doc)."""
    if g.class_name not in GENERATOR_CLASSES:
        raise ValueError(f"{path}: G_ema is a {g.class_name}, not a StyleGAN-XL generator")
    mapping, synthesis = g.module("mapping"), g.module("synthesis")
    if not isinstance(mapping, PersistentObject) or not isinstance(synthesis, PersistentObject):
        raise ValueError(f"{path}: G_ema has no mapping and synthesis networks")
    if "layer_names" not in synthesis.state or not isinstance(synthesis.module("input"), PersistentObject):
        raise ValueError(
            f"{path}: its synthesis network is not StyleGAN3's (no Fourier input and layer list)"
        )
    c_dim = int(_attr(mapping, "c_dim", path))
    if c_dim:
        raise ValueError(
            f"{path}: a conditional network ({c_dim} classes); mammoflow reads unconditional ones"
        )
    s = lambda key: _attr(synthesis, key, path)  # noqa: E731
    names = [str(n) for n in s("layer_names")]
    layers = []
    for name in names:
        record = synthesis.module(name)
        if not isinstance(record, PersistentObject) or record.class_name != "SynthesisLayer":
            raise ValueError(f"{path}: synthesis layer {name} is missing or not a SynthesisLayer")
        layers.append(_layer_spec(name, record, path))
    source = synthesis.module("input")
    first_fc = mapping.module("fc0")
    arch = ArchSpec(
        z_dim=int(_attr(mapping, "z_dim", path)),
        w_dim=int(_attr(mapping, "w_dim", path)),
        img_resolution=int(s("img_resolution")),
        img_channels=int(s("img_channels")),
        input=InputSpec(
            channels=int(_attr(source, "channels", path)),
            size=_side(_attr(source, "size", path), "input.size", path),
            sampling_rate=float(_attr(source, "sampling_rate", path)),
            bandwidth=float(_attr(source, "bandwidth", path)),
        ),
        layers=tuple(layers),
        channel_base=int(s("channel_base")),
        channel_max=int(s("channel_max")),
        mapping_layers=int(_attr(mapping, "num_layers", path)),
        mapping_lr_multiplier=float(_attr(first_fc, "bias_gain", path)) if first_fc is not None else 0.01,
        w_avg_beta=float(_attr(mapping, "w_avg_beta", path)),
        num_critical=int(s("num_critical")),
        margin_size=int(s("margin_size")),
        last_stopband_rel=float(s("last_stopband_rel")),
        output_scale=float(s("output_scale")),
        num_fp16_res=int(s("num_fp16_res")),
        conv_kernel=int(synthesis.state.get("conv_kernel", 3)),
        use_radial_filters=bool(synthesis.state.get("use_radial_filters", False)),
        head_layer_names=tuple(str(n) for n in g.state.get("head_layer_names") or ()),
    )
    if int(_attr(g, "num_ws", path)) != arch.num_ws:
        raise ValueError(f"{path}: num_ws {g.state['num_ws']} but {len(layers)} layers")
    return replace(arch, stages=tuple(infer_stages(arch, g, synthesis)))


def _same_table(a: ArchSpec, b: ArchSpec) -> bool:
    if [x.name for x in a.layers] != [y.name for y in b.layers]:
        return False
    fields = (
        "in_sampling_rate",
        "out_sampling_rate",
        "in_cutoff",
        "out_cutoff",
        "out_half_width",
        "out_channels",
    )
    return all(
        math.isclose(getattr(x, f), getattr(y, f), rel_tol=1e-9)
        for x, y in zip(a.layers, b.layers, strict=True)
        for f in fields
    )


def infer_stages(arch: ArchSpec, g: PersistentObject, synthesis: PersistentObject) -> list[Stage]:
    """How the network grew, where a rebuilt table matches the file's exactly (else [])."""
    init = synthesis.state.get("_init_kwargs") or {}
    stem_res, syn_layers = init.get("img_resolution"), init.get("num_layers")
    if not isinstance(stem_res, int) or not isinstance(syn_layers, int):
        return []
    try:
        stem = network_stem_arch(arch, stem_res, syn_layers)
    except ValueError:
        return []
    if g.class_name == "Generator":
        return list(stem.stages) if _same_table(stem, arch) else []
    last = g.state.get("_init_kwargs") or {}
    last_up, last_layers = last.get("up_factor"), last.get("head_layers")
    if not isinstance(last_up, int) or not isinstance(last_layers, int):
        return []
    before_last = arch.img_resolution // last_up
    # Each earlier head keeps (its layers - NUM_CRITICAL) layers once the next one is added.
    middle = len(arch.layers) - len(cut_critical(stem)) - (last_layers + 1)
    for count in range(min(middle, 3) + 1):  # the paper has one head before the last
        for ups in itertools.product(HEAD_UP_FACTORS, repeat=count):
            if stem_res * math.prod(ups) != before_last:
                continue
            for kept in _compositions(middle, count):
                candidate = stem
                for up, k in zip(ups, kept, strict=True):
                    candidate = grow_arch(candidate, candidate.img_resolution * up, k + NUM_CRITICAL)
                candidate = grow_arch(candidate, arch.img_resolution, last_layers)
                if _same_table(candidate, arch):
                    return list(candidate.stages)
    return []


def _compositions(total: int, parts: int):
    """Ways to write ``total`` as an ordered sum of ``parts`` positive integers."""
    if parts == 0:
        if total == 0:
            yield ()
        return
    for first in range(1, total - parts + 2):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def state_dict_of(record, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a module record and its children, named as torch's state_dict names them."""
    out: dict[str, torch.Tensor] = {}
    state = record.state if isinstance(record, PersistentObject) else (getattr(record, "state", None) or {})
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[f"{prefix}{name}"] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(state_dict_of(child, f"{prefix}{name}."))
    return out


def generator_from_record(g: PersistentObject, path) -> Generator:
    arch = arch_from_pickle(g, path)
    state = {k: v.float() for k, v in state_dict_of(g).items() if not k.startswith(UNUSED_EMBEDDING)}
    generator = Generator(arch)
    mine = generator.state_dict()
    missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    wrong = [k for k in set(mine) & set(state) if mine[k].shape != state[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"{path}: G_ema's weights do not fit its layer table: missing {missing[:3]}, "
            f"unexpected {extra[:3]}, other shapes {sorted(wrong)[:3]}"
        )
    generator.load_state_dict(state)
    return generator.requires_grad_(False).eval()


def load_stylegan_xl_pickle(path: str | Path) -> tuple[Generator, PickleInfo]:
    """StyleGAN-XL's ``G_ema`` from a ``network-snapshot-*.pkl``, read without running the file's code."""
    network = read_network_pickle(path)
    generator = generator_from_record(network.g_ema, network.path)
    progress = network.data.get("progress") or {}
    nimg = progress.get("cur_nimg") if isinstance(progress, dict) else None
    d = network.data.get("D")
    info = PickleInfo(
        path=str(network.path),
        sha256=network.sha256,
        class_name=network.g_ema.class_name,
        resolution=generator.img_resolution,
        channels=generator.img_channels,
        stages=[vars(s) for s in generator.arch.stages],
        kimg=float(nimg.reshape(-1)[0]) / 1000 if isinstance(nimg, torch.Tensor) and nimg.numel() else None,
        discriminator=None if d is None else getattr(d, "qualname", None) or getattr(d, "class_name", None),
    )
    return generator, info
