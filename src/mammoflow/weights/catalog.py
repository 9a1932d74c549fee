"""Which pretrained files a configuration needs, where each lies in the weights folder, which are missing.

Standard library only: the Snakefile imports this (a plain Snakemake driver has PyYAML and jsonschema, not
torch), and its answers decide the DAG: a cell's weights file is an input of its rule, and a missing one
stops ``snakemake -n`` with one line (``MissingWeights``) instead of a job that trains from random.

What a run needs:

- each model's backbone when its cells are pretrained (``train.pretrained``, per model through
  ``model_settings``): the timm weights named by ``weights.timm.<model>`` (``<model>.<tag>``);
- FID's reference TF-Inception when the ``augmented`` data set is made and ``gan.inception`` is
  ``reference`` (a path names a file of the user's own; ``none`` is the labelled substitute);
- the projected discriminator's feature networks (``gan.feature_networks``) when ``gan.discriminator`` is
  ``projected`` and ``gan.feature_weights`` is ``pretrained`` (``random``: on purpose, no files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_FOLDER = "resources/weights"
MANIFEST = "manifest.json"
# The files a timm hub entry (huggingface.co/timm/<name>.<tag>) holds, preferred first; model.pth is the
# name for a file from the tag's original URL (timm's pretrained_cfg.url) copied by hand.
TIMM_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth")
# FID's reference network: the TF-Inception graph of 2015-12-05 as torch-fidelity (and pytorch-fid, under
# another name) distributes it; StyleGAN's FID50k and clean-fid use the same weights. The suffix is the
# start of the file's SHA-256.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_SHA256_PREFIX = "6726825d"
HOW_TO_GET = (
    "get them with `snakemake weights` on a machine that reaches huggingface.co (a cluster's login node), "
    "or copy the files there by hand (docs/training.md); train.pretrained: false trains from random "
    "initialisation instead"
)


class MissingWeights(Exception):
    """Pretrained files the configuration asks for are not in the weights folder (one line: which, how)."""


@dataclass(frozen=True)
class Needed:
    """One pretrained file of the run."""

    kind: str  # timm | inception | file (gan.inception given as a path)
    tag: str  # timm's <name>.<tag>; the reference Inception's file name; the path
    used_by: str  # what reads it, for messages and the manifest

    @property
    def candidates(self) -> tuple[str, ...]:
        """Paths relative to the weights folder (a ``file`` is its own path), any one of which will do."""
        if self.kind == "timm":
            return tuple(f"timm/{self.tag}/{name}" for name in TIMM_FILES)
        return (self.tag,)

    @property
    def architecture(self) -> str:
        return self.tag.split(".", 1)[0]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "tag": self.tag, "used_by": self.used_by}


def folder(config: dict, base: str | Path | None = None) -> Path:
    """weights.folder; a relative one lies under ``base`` (the workflow's folder, so that every working
    directory of one checkout shares it), or under the current directory without one."""
    path = Path((config.get("weights") or {}).get("folder") or DEFAULT_FOLDER)
    return Path(base) / path if base is not None and not path.is_absolute() else path


def model_pretrained(config: dict, model: str) -> bool:
    """train.pretrained with the model's own override (model_settings), as the model's cells train."""
    own = (config.get("model_settings") or {}).get(model, {})
    return bool({**config.get("train", {}), **own}.get("pretrained", False))


def timm_tag(config: dict, name: str) -> str | None:
    return ((config.get("weights") or {}).get("timm") or {}).get(name)


def _gan_on(config: dict) -> bool:
    return "augmented" in config.get("datasets", [])


def backbone(config: dict, model: str) -> Needed | None:
    """The model's pretrained backbone, or None when its cells start from random initialisation."""
    if not model_pretrained(config, model):
        return None
    tag = timm_tag(config, model)
    if not tag:
        raise MissingWeights(
            f"weights.timm has no tag for {model} (its cells are pretrained): add `{model}: {model}.<tag>` "
            f"(timm.list_pretrained('{model}.*') lists them)"
        )
    return Needed("timm", tag, f"train {model}")


def inception(config: dict) -> Needed | None:
    """FID's Inception weights: the reference file, a user's file, or None (``none``: the substitute)."""
    setting = str((config.get("gan") or {}).get("inception", "none"))
    if not _gan_on(config) or setting == "none":
        return None
    if setting == "reference":
        return Needed("inception", INCEPTION_FILE, "gan_fid (FID's reference TF-Inception)")
    return Needed("file", setting, "gan_fid (gan.inception)")


def projected(config: dict) -> list[Needed]:
    """The projected discriminator's feature networks (none unless gan.discriminator is projected and
    gan.feature_weights pretrained)."""
    gan = config.get("gan") or {}
    if (
        not _gan_on(config)
        or gan.get("discriminator") != "projected"
        or gan.get("feature_weights") == "random"
    ):
        return []
    needs = []
    for name in gan.get("feature_networks") or ():
        tag = timm_tag(config, name)
        if not tag:
            raise MissingWeights(f"weights.timm has no tag for {name} (gan.discriminator: projected)")
        needs.append(Needed("timm", tag, "gan_stage (projected discriminator)"))
    return needs


def needed(config: dict) -> list[Needed]:
    """Every pretrained file of the configured run, each once (first use named)."""
    found: dict[tuple[str, str], Needed] = {}
    for need in [*(backbone(config, m) for m in config.get("models", [])), inception(config)]:
        if need is not None:
            found.setdefault((need.kind, need.tag), need)
    for need in projected(config):
        found.setdefault((need.kind, need.tag), need)
    return list(found.values())


def locate(root: str | Path, need: Needed) -> Path | None:
    """The need's file in the weights folder (the first candidate present), or None."""
    for candidate in need.candidates:
        path = Path(candidate) if need.kind == "file" else Path(root) / candidate
        if path.is_file():
            return path
    return None


def missing_message(root: str | Path, missing: list[Needed]) -> str:
    """One line: which files are missing, where they belong, how to get them."""
    names = ", ".join(
        f"{need.tag} (a file of your own, {need.used_by}: no such file)"
        if need.kind == "file"
        else f"{need.candidates[0]} ({need.used_by})"
        for need in missing
    )
    return f"pretrained weights missing from {root}/: {names}; {HOW_TO_GET}"


def require(config: dict, need: Needed, base: str | Path | None = None) -> str:
    """The path of ``need``'s file, or MissingWeights naming every file of the run that is missing."""
    root = folder(config, base)
    path = locate(root, need)
    if path is not None:
        return str(path)
    absent = [n for n in needed(config) if locate(root, n) is None] or [need]
    raise MissingWeights(missing_message(root, absent))


def problems(config: dict) -> list[str]:
    """What the schema cannot say about the weights settings (config.semantic_problems calls this)."""
    found = []
    for name, tag in ((config.get("weights") or {}).get("timm") or {}).items():
        if not str(tag).startswith(f"{name}.") or str(tag) == f"{name}.":
            found.append(f"weights.timm.{name}: {tag!r} is not one of {name}'s tags ({name}.<tag>)")
    if str((config.get("gan") or {}).get("inception", "none")) == "auto":
        found.append(
            "gan.inception: 'auto' (download when possible) is gone: jobs never download. Use 'reference' "
            "(the TF-Inception file in the weights folder, fetched by `snakemake weights`) or 'none'"
        )
    try:
        needed(config)
    except MissingWeights as exc:
        found.append(str(exc))
    return found
