"""The model artifact of a training cell: everything needed to apply the model, and nothing that runs code.

Two files in the cell folder:
- ``model.safetensors``: the weights in half precision (floating tensors as float16, others as they are),
  the format timm distributes weights in. safetensors is a JSON header and raw tensor bytes: reading it
  cannot execute anything, unlike a pickled ``torch.save`` checkpoint, which can carry any program.
- ``model.json``: what the weights need around them: the timm architecture and its arguments, the head
  (fastai's, described by ``head``; format version 1 had timm's one-logit classifier, still read), the
  input (channels, scaling, normalisation), the output (which class is cancer), the resolution, the data
  set kind, the decode and preprocess settings its store was built with, protocol and fold, the pretrained
  weights it started from (tag, file, SHA-256), the thresholds chosen on the cell's own validation
  predictions, the versions, and the weights file's SHA-256. The weights file's header carries the rest
  of model.json in turn, so that neither can be swapped or edited alone (artifact_checks.py checks both,
  and the architecture against the weights' shapes, before anything is loaded).

``load_artifact`` needs neither the training config nor the store: a folder with these two files is a
model that can be handed to someone else. Half precision halves the disk (a resnet152 cell: 233 MB as
fp32 model.pt, 117 MB here) and changes the validation probabilities by less than bf16 autocast does.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from torch import nn

from mammoflow import __version__, paths
from mammoflow.atomic import atomic_path, file_sha256, write_text
from mammoflow.classify.models import (
    FASTAI_HEAD,
    GRAY_MEAN,
    GRAY_STD,
    LEGACY_HEAD,
    Classifier,
    Weights,
    build_model,
    size_kwargs,
)
from mammoflow.stats import choose_thresholds

FORMAT = "mammoflow-model"
# 2: fastai's head, two outputs, weights bound to model.json. 1 (mammoflow 0.1): timm's one-logit
# classifier and unbound weights, refused (nothing shows its model.json belongs to its weights).
FORMAT_VERSION = 2
READABLE_VERSIONS = (2,)
WEIGHTS_NAME = paths.ARTIFACT_WEIGHTS  # model.safetensors
METADATA_NAME = paths.ARTIFACT_METADATA  # model.json
# A torch.save file is a zip archive (PK..) or, in the legacy format, a bare pickle (protocol byte 0x80).
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")


class ArtifactError(ValueError):
    """A model artifact that is incomplete, damaged, or would need code to be run to load it."""


def half_precision_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors as float16, contiguous and on the CPU (as safetensors wants)."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        state[name] = tensor.contiguous()
    return state


def versions() -> dict:
    import timm

    return {
        "mammoflow": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def input_spec(architecture: str, resolution: int) -> dict:
    """How images enter the network (mirrors classify.models.normalize_batch)."""
    return {
        "channels": 1,
        "dtype": "uint8",
        "shape": [resolution, resolution],
        "scale": 1 / 255,
        "mean": GRAY_MEAN,
        "std": GRAY_STD,
        "timm_kwargs": {"num_classes": 0, "in_chans": 1, **size_kwargs(architecture, resolution)},
    }


OUTPUT = {"classes": ["no cancer", "cancer"], "probability": "softmax of the two outputs, the second"}
LEGACY_OUTPUT = {"classes": ["cancer"], "probability": "sigmoid of the one output"}


def save_artifact(out_dir: str | Path, model: nn.Module, metadata: dict, keep_weights: bool = True) -> dict:
    """Write model.safetensors (fp16) and model.json (``metadata`` + format, input, versions, checksum).

    ``keep_weights=False`` (train.keep_weights, per model through model_settings) writes model.json alone,
    with ``weights: null``: the cell's thresholds and preparation stay on record, and loading it says why
    there is nothing to load."""
    from safetensors.torch import save_file

    from mammoflow.classify.artifact_checks import IDENTITY_KEY, sort_header, weights_identity

    for key in ("architecture", "resolution"):
        if key not in metadata:
            raise ArtifactError(f"artifact metadata needs {key!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_NAME
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **metadata,
        "input": input_spec(metadata["architecture"], int(metadata["resolution"])),
        # (a model without fastai's head is timm's one-logit network of format version 1)
        "head": FASTAI_HEAD if isinstance(model, Classifier) else LEGACY_HEAD,
        "output": OUTPUT if isinstance(model, Classifier) else LEGACY_OUTPUT,
        "weights": None,
        "versions": versions(),
    }
    if keep_weights:
        # The weights carry the model.json they belong to (artifact_checks.py checks the two agree).
        header = {"format": "pt", IDENTITY_KEY: weights_identity(document)}
        with atomic_path(weights_path) as tmp:
            save_file(half_precision_state(model), str(tmp), metadata=header)
            sort_header(tmp)
        document["weights"] = {"file": WEIGHTS_NAME, "dtype": "float16", "sha256": file_sha256(weights_path)}
    write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", out_dir / METADATA_NAME)
    return document


def read_metadata(path: str | Path) -> dict:
    """model.json of an artifact (``path``: the file or its folder), checked for format and version."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_NAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no model artifact here ({METADATA_NAME} not found)")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a model artifact's JSON metadata: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} artifact (format {document.get('format')!r})")
    if document.get("format_version") == 1:
        raise ArtifactError(
            f"{path}: artifact format version 1 (mammoflow 0.1: timm's one-logit head, and weights that do "
            "not record the model.json they belong to); retrain the cell with this mammoflow"
        )
    if document.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{path}: artifact format version {document.get('format_version')!r}; "
            f"this mammoflow reads version {', '.join(map(str, READABLE_VERSIONS))}"
        )
    missing = [k for k in ("architecture", "resolution", "input", "weights") if k not in document]
    if missing:
        raise ArtifactError(f"{path}: metadata lacks {', '.join(missing)}")
    document["_dir"] = str(path.parent)
    return document


def _refuse_pickle(path: Path) -> None:
    """A safetensors file starts with its header's length (u64, little-endian) and the JSON header."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) == 9 and head[8:9] == b"{" and 0 < size < 100_000_000:
        return
    if head.startswith(PICKLE_MAGIC):
        raise ArtifactError(
            f"{path}: this is a pickled PyTorch checkpoint (torch.save), not safetensors. Loading it could "
            "run arbitrary code, so mammoflow refuses; ask for the safetensors artifact, or convert a "
            "checkpoint you trust yourself with torch.load(weights_only=True) and safetensors' save_file."
        )
    raise ArtifactError(f"{path}: not a safetensors file (no valid header)")


def model_from_metadata(metadata: dict) -> nn.Module:
    """The untrained model an artifact's model.json describes (its weights are loaded into it)."""
    try:
        model, _ = build_model(
            metadata["architecture"], int(metadata["resolution"]), head=metadata.get("head")
        )
    except ValueError as exc:
        raise ArtifactError(f"{Path(metadata['_dir']) / METADATA_NAME}: {exc}") from exc
    return model


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model (fp32, eval mode) and its metadata. Never unpickles: the weights must be safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mammoflow.classify.artifact_checks import check_artifact

    metadata = check_artifact(path)  # weights record, hash, input, cell, binding, shapes: artifact_checks.py
    weights_path = Path(metadata["_dir"]) / metadata["weights"]["file"]
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_path}: cannot be read as safetensors: {exc}") from exc
    model = model_from_metadata(metadata)
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ArtifactError(
            f"{weights_path}: weights do not fit {metadata['architecture']}: {reason}"
        ) from exc
    return model.to(device).eval(), metadata


def save_cell_artifact(
    cell, model: nn.Module, train_settings: dict, weights: Weights, res: int, predictions
):  # train_settings["keep_weights"] (default true) decides whether the weights file is written
    """The artifact of a finished training cell (classify.train.Cell), beside its other outputs."""
    metadata = describe_cell(cell, res, weights, train_settings, predictions)
    return save_artifact(cell.out, model, metadata, keep_weights=train_settings.get("keep_weights", True))


def describe_cell(cell, resolution: int, weights: Weights, train_settings: dict, predictions) -> dict:
    """The metadata of a finished cell (classify.train.Cell): its data set's preparation (from the store's
    summary.json) and the thresholds chosen on its own validation predictions (real images only), image and
    breast level."""
    from mammoflow.classify.metrics import breast_level

    summary_path = Path(cell.store) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # A store made outside the preprocess stage (tests build them from arrays) records no preparation:
    # the artifact then says so, and `mammoflow predict` refuses it rather than guess.
    store_dataset = summary.get("dataset")
    real = predictions[predictions["source"] == "real"]
    breasts = breast_level(real)
    return {
        "architecture": cell.model,
        "resolution": int(resolution),
        "dataset": "augmented" if cell.synthetic else (store_dataset or "unknown"),
        "preprocess": {"dataset": store_dataset, "options": summary.get("options")},
        "decode": getattr(cell, "decode", None),
        "protocol": cell.protocol,
        "fold": int(cell.fold),
        "pretrained_weights": weights.label,
        "pretrained": weights.as_dict(),
        "train_settings": train_settings,
        "thresholds": {
            "source": f"this cell's validation fold ({len(real)} real images, {len(breasts)} breasts)",
            "image": choose_thresholds(real["cancer"].to_numpy(), real["probability"].to_numpy()),
            "breast_mean": choose_thresholds(breasts["cancer"].to_numpy(), breasts["probability"].to_numpy()),
        },
    }
