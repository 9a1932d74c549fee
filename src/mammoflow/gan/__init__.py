"""Progressive StyleGAN-family generator for synthetic positive mammograms (the `augmented` data set).

Modules:

- ``networks``: mapping network, 16 px synthesis stem, super-resolution heads, residual discriminator;
- ``augment``: differentiable augmentation (DiffAugment: colour, translation, cutout);
- ``data``: which positives a stage may see (protocol and fold), at the stage's resolution;
- ``train``: one stage's training loop (non-saturating loss, lazy R1, EMA), checkpoint and resume;
- ``sample``: generation and the synthetic store; ``fid``: FID or a labelled substitute;
- ``cli``: the ``gan-stage``, ``gan-fid`` and ``synthesize`` subcommands the rules call.

See docs/gan.md for how these map onto the paper's StyleGAN-XL set-up (its Table 1).
"""
