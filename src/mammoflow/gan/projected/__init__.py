"""The projected discriminator of StyleGAN-XL (after Projected GAN, Sauer et al. 2021 and 2022).

A discriminator that judges images through frozen, ImageNet-pretrained feature networks instead of
learning its features from the few positives it is shown:

- ``features``: the feature networks (timm's ``tf_efficientnet_lite0`` and ``deit_base_distilled_patch16_224``
  by default), each cut into four levels of decreasing resolution, frozen, in eval mode; their weights come
  from local files (never downloaded inside a job), or are random only when the config asks for it;
- ``projection``: Projected GAN's fixed random projection of those levels: cross-channel mixing (1x1
  convolutions) and cross-scale mixing (each level upsampled and added into the finer one), frozen;
- ``heads``: one small trainable discriminator per level (spectrally normalised strided convolutions with
  batch normalisation) that returns a map of patch logits;
- ``discriminator``: the whole, as StyleGAN-XL's ``ProjectedDiscriminator`` runs it: DiffAugment per feature
  network, the image mapped to the network's input statistics, images below 224 px (and every image a ViT
  sees) interpolated to 224 px.

Only the heads train. Unconditional only: StyleGAN-XL's class-conditional heads (class embeddings projected
onto the logits) and its classifier guidance are not built (mammoflow's GAN has one class).
"""
