"""`mammoflow weights`: put every pretrained file a run needs into the weights folder, and its manifest.

Runs where Snakemake runs (a local rule: on a cluster, the login node, which has the network). A file
already in the folder (an earlier run, or copied by hand on a machine that never reaches the hub) is kept
and only hashed; a missing one is downloaded the way timm itself would get it: from the tag's Hugging Face
hub entry (``model.safetensors`` first, then ``pytorch_model.bin``), or from the tag's URL where timm names
no hub entry. FID's reference Inception comes from torch-fidelity's release and must match the SHA-256
prefix in its name.

``manifest.json`` lists each file: where it came from (hub entry and revision, URL, or "in the folder
already"), its tag, SHA-256 and size. Jobs do not trust it: each hashes the file it loads itself.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from mammoflow.atomic import file_sha256
from mammoflow.progress import say
from mammoflow.weights.catalog import (
    INCEPTION_FILE,
    INCEPTION_SHA256_PREFIX,
    INCEPTION_URL,
    MANIFEST,
    TIMM_FILES,
    Needed,
    locate,
)

FORMAT = "mammoflow-weights"


def _install(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` via a temporary name: a killed copy leaves no whole-looking file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _download_url(url: str, target: Path, sha256_prefix: str = "") -> None:
    """``url`` to ``target``; with ``sha256_prefix`` a file of another SHA-256 is refused (and not kept)."""
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        digest = file_sha256(partial)
        if not digest.startswith(sha256_prefix):
            raise ValueError(
                f"{url}: SHA-256 {digest[:16]}... is not the expected {sha256_prefix}...; "
                f"not installed as {target}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def fetch_timm(root: Path, tag: str) -> tuple[Path, str]:
    """Download timm's pretrained weights ``tag`` (<name>.<tag>) into root/timm/<tag>/; (path, source)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(tag)
    if cfg is None or "." not in tag:
        raise ValueError(
            f"timm {timm.__version__} has no pretrained weights {tag!r} "
            f"(timm.list_pretrained('{tag.split('.')[0]}.*') lists them)"
        )
    folder = root / "timm" / tag
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(TIMM_FILES[:2])
        for name in names:
            try:
                cached = Path(hf_hub_download(repo, name, revision=revision or None))
            except EntryNotFoundError:
                continue
            # The hub cache keeps files under snapshots/<commit>/: that commit is the revision fetched.
            commit = cached.parent.name if cached.parent.parent.name == "snapshots" else "unknown"
            target = folder / ("model.safetensors" if name.endswith(".safetensors") else "pytorch_model.bin")
            _install(cached, target)
            return target, f"https://huggingface.co/{repo}/blob/{commit}/{name}"
        raise FileNotFoundError(f"hub entry {repo} holds none of {', '.join(names)}")
    if cfg.url:
        target = folder / "model.pth"
        _download_url(cfg.url, target)
        return target, cfg.url
    raise ValueError(f"timm names no hub entry and no URL for {tag!r}")


def fetch_inception(root: Path, url: str = INCEPTION_URL) -> tuple[Path, str]:
    """FID's reference Inception into the folder, under the reference name; its SHA-256 must match."""
    target = root / INCEPTION_FILE
    _download_url(url, target, INCEPTION_SHA256_PREFIX)
    return target, url


def fetch_all(root: str | Path, needs: list[Needed], inception_url: str = INCEPTION_URL) -> dict:
    """Every needed file present in ``root`` (missing ones downloaded); writes and returns the manifest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for need in needs:
        path = locate(root, need)
        if path is not None:
            source = "in the folder already (an earlier `snakemake weights`, or copied by hand)"
            say(f"weights: {need.tag}: {path} is there")
        elif need.kind == "timm":
            say(f"weights: {need.tag}: downloading")
            path, source = fetch_timm(root, need.tag)
        elif need.kind == "inception":
            say(f"weights: {need.tag}: downloading {inception_url}")
            path, source = fetch_inception(root, inception_url)
        else:  # gan.inception names a file of the user's: nothing to download
            raise FileNotFoundError(f"gan.inception: {need.tag}: no such file")
        digest = file_sha256(path)
        if need.kind == "inception" and not digest.startswith(INCEPTION_SHA256_PREFIX):
            raise ValueError(
                f"{path}: SHA-256 {digest[:16]}... is not the reference Inception's "
                f"({INCEPTION_SHA256_PREFIX}...): delete it and run `snakemake weights` again"
            )
        entries.append(
            {
                **need.as_dict(),
                "file": path.relative_to(root).as_posix() if need.kind != "file" else str(path),
                "source": source,
                "sha256": digest,
                "bytes": path.stat().st_size,
            }
        )
    manifest = {
        "format": FORMAT,
        "format_version": 1,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": entries,
    }
    partial = root / f".{MANIFEST}.part{os.getpid()}"
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, root / MANIFEST)
    return manifest
