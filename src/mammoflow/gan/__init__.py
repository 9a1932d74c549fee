"""Progressive StyleGAN-family generator for synthetic positive mammograms (the `augmented` data set).

Modules:

- ``stylegan_xl``: StyleGAN-XL's generator (stem, super-resolution heads), its network pickles read
  without running them, and the same format written (fixtures);
- ``networks``: the earlier StyleGAN2-style generator (what ``gan-stage`` trains until the loop moves to
  ``stylegan_xl``) and the residual discriminator;
- ``network_io``: reading any generator file (network.pt of either kind, StyleGAN-XL pickles), drawing;
- ``augment``: differentiable augmentation (DiffAugment: colour, translation, cutout);
- ``data``: which positives a stage may see (protocol and fold), at the stage's resolution;
- ``train``: one stage's training loop (non-saturating loss, lazy R1, EMA), checkpoint and resume;
- ``sample``: generation and the synthetic store; ``fid``: FID or a labelled substitute;
- ``cli``: the ``gan-stage``, ``gan-fid`` and ``synthesize`` subcommands the rules call, and
  ``mammoflow gan generate``.

See docs/gan.md for how these map onto the paper's StyleGAN-XL set-up (its Table 1).
"""
