"""Progressive StyleGAN-XL for synthetic positive mammograms (the `augmented` data set).

Modules:

- ``stylegan_xl``: StyleGAN-XL's generator (stem, super-resolution heads), its network pickles read
  without running them, and the same format written (fixtures);
- ``projected``: StyleGAN-XL's projected discriminator (frozen feature networks, random projections, heads);
- ``residual``: the alternative discriminator, StyleGAN2's, trained from scratch (its network in
  ``networks``, which also still holds the earlier StyleGAN2-style generator no stage trains any more);
- ``network_io``: reading any generator file (network.pt of either kind, StyleGAN-XL pickles), drawing;
- ``augment``: differentiable augmentation (DiffAugment: colour, translation, cutout);
- ``data``: which positives a stage may see (protocol and fold), at the stage's resolution;
- ``settings``: which config keys each GAN job depends on, and one stage's settings (``StageSettings``);
- ``losses``: the phases of a step (StyleGAN-XL's hinge loss, blur and path lengths; or StyleGAN2's);
- ``stage_state``: what a stage carries from step to step, its checkpoint and resume;
- ``train``: one stage's training loop and the stage folder it writes; ``stage_runtime``: timing, SIGTERM;
- ``sample``: generation and the synthetic store; ``fid``: FID or a labelled substitute; ``snapshots``:
  the paper's Figure 1 per stage;
- ``cli``: the ``gan-stage``, ``gan-fid`` and ``synthesize`` subcommands the rules call, and
  ``mammoflow gan generate``.

See docs/gan.md for how these map onto the paper's StyleGAN-XL set-up (its Table 1) and what differs.
"""
