"""Pretrained files: which ones a configured run needs, where they lie, and how the `weights` rule gets them.

Every pretrained file a job may read sits in one folder (``weights.folder``, default ``resources/weights``):

    resources/weights/
      timm/<name>.<tag>/model.safetensors      (or pytorch_model.bin / model.pth: the hub entry's file)
      weights-inception-2015-12-05-6726825d.pth   FID's reference TF-Inception (torch-fidelity's file)
      manifest.json                            source, tag, SHA-256 and size of each file

``catalog`` (standard library only: the Snakemake driver imports it) lists the files a configuration needs
and finds the missing ones, so that ``snakemake -n`` stops before anything runs; ``fetch`` (timm and
huggingface_hub, imported only there) downloads them on a machine with network access. Jobs never go to
the network: each gets its file's path on its command line and records the file's SHA-256.
"""
