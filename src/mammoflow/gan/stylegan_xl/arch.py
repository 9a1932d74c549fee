"""The layer table of a StyleGAN-XL generator: every synthesis layer's sampling rates, cut-offs, sizes and
widths, computed the way StyleGAN-XL's ``SynthesisNetwork`` (the stem) and ``SuperresGenerator`` (each
super-resolution head) compute them. No torch here: ``gan/settings.py`` and the workflow read it.

Vocabulary (StyleGAN3's): a layer's signal has ``sampling_rate`` samples per unit length, is band-limited
below ``cutoff`` with a transition half-width ``half_width``, in a tensor ``size`` pixels wide (the rate plus
``margin_size`` a side; the last two layers are cropped to the image). The stem goes from Fourier features to
its resolution in ``num_layers`` layers and a "to image" layer, cut-offs growing geometrically, the last
``num_critical`` critically sampled; a head continues from the stem's last layer that is not (those and the
"to image" layer are cut) up to ``up_factor`` times the resolution in ``head_layers`` layers.

Widths: ``min(channel_base / 2 / cutoff, channel_max)``. ``channel_base`` and ``channel_max`` are the
*network's* values; StyleGAN-XL's ``train.py`` doubles its ``--cbase``/``--cmax`` options for the
StyleGAN3 configurations, so Table 1's 16384 / 256 are a network with 32768 / 512 (``doubled_widths``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

HEAD_UP_FACTORS = (2, 4, 8, 16)  # what StyleGAN-XL's SuperresGenerator accepts
NUM_CRITICAL = 2
FIRST_CUTOFF = 2.0
FIRST_STOPBAND = 2**2.1
LAST_STOPBAND_REL = 2**0.3
MARGIN_SIZE = 10
OUTPUT_SCALE = 0.25
NUM_FP16_RES = 4
CONV_CLAMP = 256.0
HEAD_MAGNITUDE_EMA_BETA = 0.999  # SuperresGenerator does not pass its own: SynthesisLayer's default


def doubled_widths(cbase: int, cmax: int) -> tuple[int, int]:
    """(channel_base, channel_max) of the network for StyleGAN-XL's ``--cbase``/``--cmax`` (its train.py
    doubles both for stylegan3-t; Table 1's 16384 / 256 become 32768 / 512)."""
    return 2 * int(cbase), 2 * int(cmax)


def stem_magnitude_ema_beta(batch: int) -> float:
    """StyleGAN-XL's train.py: the stem's layers track input magnitudes with a half-life of 20 kimg."""
    return 0.5 ** (batch / (20 * 1e3))


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input (StyleGAN3's ``SynthesisInput``)."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer, with StyleGAN-XL's attribute names."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool  # StyleGAN-XL's fp16 flag (CUDA only there); recorded, mammoflow runs fp32 or autocast
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int = 3  # 1 for "to image" (as StyleGAN-XL records it)
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = CONV_CLAMP
    magnitude_ema_beta: float = HEAD_MAGNITUDE_EMA_BETA

    @property
    def tmp_sampling_rate(self) -> int:
        """The rate the leaky ReLU runs at: the larger of in and out, times ``lrelu_upsampling``."""
        return max(self.in_sampling_rate, self.out_sampling_rate) * (
            1 if self.is_torgb else self.lrelu_upsampling
        )

    @property
    def up_factor(self) -> int:
        return int(np.rint(self.tmp_sampling_rate / self.in_sampling_rate))

    @property
    def down_factor(self) -> int:
        return int(np.rint(self.tmp_sampling_rate / self.out_sampling_rate))

    @property
    def up_taps(self) -> int:
        return self.filter_size * self.up_factor if self.up_factor > 1 and not self.is_torgb else 1

    @property
    def down_taps(self) -> int:
        return self.filter_size * self.down_factor if self.down_factor > 1 and not self.is_torgb else 1

    @property
    def down_radial(self) -> bool:
        return self.use_radial_filters and not self.is_critically_sampled

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(x before, x after, y before, y after) around the upsampled signal, so that the filters'
        footprint gives ``out_size`` samples, shifted as StyleGAN3's symmetric interpretation wants."""
        total = (self.out_size - 1) * self.down_factor + 1  # wanted before downsampling
        total -= (self.in_size + self.conv_kernel - 1) * self.up_factor  # what the upsampling gives
        total += self.up_taps + self.down_taps - 2  # what the filters take away
        before = (total + self.up_factor) // 2
        return (before, total - before, before, total - before)


@dataclass(frozen=True)
class Stage:
    """How the generator grew: the stem (``up_factor`` 1) or a head."""

    resolution: int
    layers: int
    up_factor: int = 1


@dataclass(frozen=True)
class ArchSpec:
    """Everything that shapes a generator: its mapping, its input, its layer table, and how to grow it."""

    z_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    channel_base: int  # the network's (doubled) value
    channel_max: int
    c_dim: int = 0
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    num_critical: int = NUM_CRITICAL
    margin_size: int = MARGIN_SIZE
    last_stopband_rel: float = LAST_STOPBAND_REL
    output_scale: float = OUTPUT_SCALE
    num_fp16_res: int = NUM_FP16_RES
    conv_kernel: int = 3
    use_radial_filters: bool = False
    head_layer_names: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = field(default=())  # () where a pickle does not say

    @property
    def num_ws(self) -> int:
        """w vectors the synthesis takes: one for the input, one per layer."""
        return len(self.layers) + 1

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def to_dict(self) -> dict:
        """Plain JSON-able data (network.pt keeps it beside the weights)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpec:
        d = dict(d)
        d["input"] = InputSpec(**d["input"])
        d["layers"] = tuple(LayerSpec(**layer) for layer in d["layers"])
        d["head_layer_names"] = tuple(d.get("head_layer_names", ()))
        d["stages"] = tuple(Stage(**s) for s in d.get("stages", ()))
        return cls(**d)


def _rint_channels(channel_base: int, channel_max: int, cutoffs: np.ndarray) -> np.ndarray:
    return np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))


def _band_plan(
    first_cutoff: float, first_stopband: float, resolution: int, layers: int, last_stopband_rel: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut-offs, stop bands and sampling rates of ``layers + 1`` layers: geometric from the first to half
    the resolution, flat over the last ``NUM_CRITICAL`` + 1 (the critically sampled ones and "to image")."""
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(layers + 1) / (layers - NUM_CRITICAL), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    return cutoffs, stopbands, rates


def _layers(
    first_index: int, resolution: int, plan: dict[str, np.ndarray], num_fp16_res: int, **layer_kwargs
) -> list[LayerSpec]:
    """LayerSpecs from per-layer arrays (index i's input is layer i - 1's output, the first's its own)."""
    out = []
    count = len(plan["cutoffs"])
    conv_kernel = layer_kwargs.pop("conv_kernel", 3)
    for i in range(count):
        prev = max(i - 1, 0)
        size, channels = int(plan["sizes"][i]), int(plan["channels"][i])
        out.append(
            LayerSpec(
                name=f"L{i + first_index}_{size}_{channels}",
                is_torgb=i == count - 1,
                conv_kernel=1 if i == count - 1 else conv_kernel,
                is_critically_sampled=i >= count - 1 - NUM_CRITICAL,
                use_fp16=bool(plan["rates"][i] * 2**num_fp16_res > resolution),
                in_channels=int(plan["channels"][prev]),
                out_channels=channels,
                in_size=int(plan["sizes"][prev]),
                out_size=size,
                in_sampling_rate=int(plan["rates"][prev]),
                out_sampling_rate=int(plan["rates"][i]),
                in_cutoff=float(plan["cutoffs"][prev]),
                out_cutoff=float(plan["cutoffs"][i]),
                in_half_width=float(plan["half_widths"][prev]),
                out_half_width=float(plan["half_widths"][i]),
                **layer_kwargs,
            )
        )
    return out


@dataclass(frozen=True)
class StemConfig:
    """The stem as mammoflow's config gives it: Table 1's ``cbase``/``cmax`` (doubled for the network, as
    StyleGAN-XL's train.py does), ``syn_layers``, the latent sizes, the image channels."""

    resolution: int  # the first of gan.stages
    cbase: int
    cmax: int
    syn_layers: int
    z_dim: int
    w_dim: int
    map_layers: int
    img_channels: int = 1  # the stores are grey; 3 for an RGB network of StyleGAN-XL's
    magnitude_ema_beta: float = stem_magnitude_ema_beta(32)
    conv_clamp: float | None = CONV_CLAMP

    @classmethod
    def configured(cls, **changes) -> StemConfig:
        """config.yaml's gan section (Table 1's values), with ``changes`` laid over it."""
        from mammoflow.sections import defaults

        gan = defaults("gan")
        keys = ("cbase", "cmax", "syn_layers", "z_dim", "w_dim", "map_layers")
        return cls(**{"resolution": gan["stages"][0], **{k: gan[k] for k in keys}, **changes})


def _layer_plan(cutoffs, stopbands, rates, sizes, channels) -> dict:
    """The per-layer filter table of the stem and of a head (half widths as StyleGAN3 sets them)."""
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    return dict(cutoffs=cutoffs, rates=rates, half_widths=half_widths, sizes=sizes, channels=channels)


def _stem_layers(
    resolution: int, syn_layers: int, channel_base: int, channel_max: int, img_channels: int, **layer_kwargs
) -> tuple[InputSpec, list[LayerSpec]]:
    """The Fourier input and the layers of StyleGAN-XL's stem (its SynthesisNetwork's layer specs)."""
    if syn_layers <= NUM_CRITICAL:
        raise ValueError(
            f"syn_layers {syn_layers}: StyleGAN-XL's stem needs more layers than its "
            f"{NUM_CRITICAL} critically sampled ones (at least {NUM_CRITICAL + 1})"
        )
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"stem resolution {resolution}: a power of two of at least 4")
    cutoffs, stopbands, rates = _band_plan(
        FIRST_CUTOFF, FIRST_STOPBAND, resolution, syn_layers, LAST_STOPBAND_REL
    )
    sizes = rates + MARGIN_SIZE * 2
    sizes[-2:] = resolution
    channels = _rint_channels(channel_base, channel_max, cutoffs)
    channels[-1] = img_channels
    plan = _layer_plan(cutoffs, stopbands, rates, sizes, channels)
    source = InputSpec(int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]))
    return source, _layers(0, resolution, plan, NUM_FP16_RES, **layer_kwargs)


def stem_arch(config: StemConfig) -> ArchSpec:
    """The layer table of StyleGAN-XL's stem (``--cfg stylegan3-t --syn_layers N``, unconditional)."""
    res = int(config.resolution)
    channel_base, channel_max = doubled_widths(config.cbase, config.cmax)
    source, layers = _stem_layers(
        res,
        config.syn_layers,
        channel_base,
        channel_max,
        config.img_channels,
        magnitude_ema_beta=config.magnitude_ema_beta,
        conv_clamp=config.conv_clamp,
    )
    return ArchSpec(
        z_dim=config.z_dim,
        w_dim=config.w_dim,
        img_resolution=res,
        img_channels=config.img_channels,
        input=source,
        layers=tuple(layers),
        channel_base=channel_base,
        channel_max=channel_max,
        mapping_layers=config.map_layers,
        stages=(Stage(res, config.syn_layers),),
    )


def network_stem_arch(like: ArchSpec, resolution: int, syn_layers: int) -> ArchSpec:
    """The stem ``like``'s network would have had at ``resolution`` px with ``syn_layers`` layers (its own,
    already doubled, widths): how a read network's growth is recovered."""
    source, layers = _stem_layers(
        resolution,
        syn_layers,
        like.channel_base,
        like.channel_max,
        like.img_channels,
        conv_kernel=like.conv_kernel,
    )
    return replace(
        like,
        img_resolution=resolution,
        input=source,
        layers=tuple(layers),
        head_layer_names=(),
        stages=(Stage(resolution, syn_layers),),
    )


def head_up_factor(previous: int, resolution: int) -> int:
    """The up factor of a head from ``previous`` px to ``resolution`` px (one StyleGAN-XL supports)."""
    up, rest = divmod(int(resolution), int(previous))
    if rest or up not in HEAD_UP_FACTORS:
        raise ValueError(
            f"a super-resolution head from {previous} to {resolution} px: StyleGAN-XL's heads grow by "
            f"{', '.join(map(str, HEAD_UP_FACTORS))}, not {resolution / previous:g}"
        )
    return up


def cut_critical(arch: ArchSpec) -> tuple[LayerSpec, ...]:
    """The layers a new head builds on: all but the trailing critically sampled ones (and "to image")."""
    layers = list(arch.layers)
    while layers and layers[-1].is_critically_sampled:
        layers.pop()
    if not layers:
        raise ValueError("the generator has no layer that is not critically sampled to grow from")
    return tuple(layers)


def grow_arch(arch: ArchSpec, resolution: int, head_layers: int) -> ArchSpec:
    """The layer table with one more super-resolution head, as StyleGAN-XL's SuperresGenerator builds it."""
    if head_layers <= NUM_CRITICAL:
        raise ValueError(
            f"head_layers {head_layers}: a StyleGAN-XL head needs more layers than its {NUM_CRITICAL} "
            f"critically sampled ones (at least {NUM_CRITICAL + 1})"
        )
    up = head_up_factor(arch.img_resolution, resolution)
    kept = cut_critical(arch)
    last = kept[-1]
    first_stopband = last.out_half_width + last.out_cutoff
    cutoffs, stopbands, rates = _band_plan(
        last.out_cutoff, first_stopband, resolution, head_layers, arch.last_stopband_rel
    )
    rates[0] = last.out_sampling_rate
    sizes = rates + arch.margin_size * 2
    sizes[-2:] = resolution
    channels = _rint_channels(arch.channel_base, arch.channel_max, cutoffs)
    channels[0] = last.out_channels
    channels[-1] = arch.img_channels
    plan = _layer_plan(cutoffs, stopbands, rates, sizes, channels)
    head = _layers(
        len(kept) + 1,
        resolution,
        plan,
        arch.num_fp16_res,
        conv_kernel=arch.conv_kernel,
        use_radial_filters=arch.use_radial_filters,
    )
    return replace(
        arch,
        img_resolution=int(resolution),
        layers=(*kept, *head),
        head_layer_names=tuple(layer.name for layer in head),
        stages=(*arch.stages, Stage(int(resolution), head_layers, up)) if arch.stages else (),
    )


def arch_for_stages(config: StemConfig, stages: list[int], head_layers: int) -> ArchSpec:
    """The generator of a progressive run: the stem at ``stages[0]``, one head per later stage."""
    arch = stem_arch(replace(config, resolution=int(stages[0])))
    for res in stages[1:]:
        arch = grow_arch(arch, int(res), head_layers)
    return arch
