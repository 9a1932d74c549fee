"""StyleGAN-XL's generator in plain PyTorch, and StyleGAN-XL's network pickles read without running them.

Modules:

- ``arch``: the layer table (sampling rates, cut-offs, sizes, widths) of the stem and of each
  super-resolution head, as StyleGAN-XL computes it; no torch (the workflow imports it);
- ``filters``: the Kaiser low-pass filters and the filtered leaky ReLU, without custom CUDA ops;
- ``layers``: fully connected layer, Fourier-feature input, modulated synthesis layer;
- ``generator``: mapping and synthesis networks, ``Generator`` (StyleGAN-XL's interface), building the
  stem, growing a head, head-only training;
- ``pickle_reader``: a restricted unpickler for ``network-snapshot-*.pkl`` (nothing from the file runs);
- ``pickle_network``: a generator from what the reader found, and the same format written (tests, export).

See docs/gan.md for what is StyleGAN-XL's and what differs.
"""

from mammoflow.gan.stylegan_xl.arch import (
    ArchSpec,
    LayerSpec,
    StemConfig,
    arch_for_stages,
    grow_arch,
    stem_arch,
)
from mammoflow.gan.stylegan_xl.generator import (
    Generator,
    build_generator,
    build_stem,
    grow_generator,
    set_train_head_only,
)

__all__ = [
    "ArchSpec",
    "Generator",
    "LayerSpec",
    "StemConfig",
    "arch_for_stages",
    "build_generator",
    "build_stem",
    "grow_arch",
    "grow_generator",
    "set_train_head_only",
    "stem_arch",
]
