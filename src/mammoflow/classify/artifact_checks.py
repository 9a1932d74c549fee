"""Everything checked in a model artifact before anything is decoded or loaded with it.

``mammoflow predict`` checks every artifact it will use before it decodes a single image (a large folder
takes hours to decode; an artifact that cannot be used should fail in seconds), and ``load_artifact`` runs
the same checks for every other user (Grad-CAM). Each check names the file and what is wrong:

- the weights record: present (a cell that kept no weights says so), a plain file name beside model.json,
  not a pickle, and a SHA-256 that is required (``null`` is refused) and matches the file;
- the input: ``model.json``'s ``input`` (shape, scale, mean, std, channels, dtype, timm arguments) is what
  this mammoflow feeds the network for that architecture and ``resolution``, so an edited resolution whose
  ``input.shape`` still says otherwise, or another normalisation, is refused instead of applied;
- the binding of model.json to its weights: the weights file's header carries the model.json it was saved
  with (all of it but the weights record itself), so an edited ``resolution``, ``fold``, preprocessing or
  threshold, or the model.json of another cell beside these weights, is refused, naming the keys;
- the cell: inside a results tree, the folder's protocol, resolution, data set, model and fold are the ones
  model.json states, so another fold's artifact copied into this fold's folder is refused;
- the architecture against the weights' shapes: the model model.json describes is built (on PyTorch's meta
  device: shapes only, no memory, a resnet152 in 0.3 s) and its state-dict names and shapes compared with
  the safetensors header, so weights of another architecture or resolution never reach load_state_dict.
"""

from __future__ import annotations

import json
from pathlib import Path

from mammoflow import paths
from mammoflow.atomic import file_sha256
from mammoflow.classify.artifact import (
    METADATA_NAME,
    ArtifactError,
    _refuse_pickle,
    input_spec,
    model_from_metadata,
    read_metadata,
)

IDENTITY_KEY = "mammoflow.model"  # in the safetensors header's string metadata
SHA256_HEX = set("0123456789abcdef")


def weights_identity(document: dict) -> str:
    """The model.json a weights file is saved with: all of it but the weights record (which holds the
    file's own checksum), as canonical JSON text."""
    kept = {k: v for k, v in document.items() if k not in ("weights", "_dir")}
    return json.dumps(kept, sort_keys=True, allow_nan=False)


def sort_header(path: Path) -> None:
    """Rewrite a safetensors header with its keys sorted. safetensors writes the header's metadata in
    hash-map order, which changes from run to run once there are two keys: sorted, one model gives one file,
    byte for byte (same length and offsets; the format allows trailing spaces in the header)."""
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= size:  # always: the same content, compact, as safetensors writes it
            handle.seek(8)
            handle.write(text + b" " * (size - len(text)))


def check_artifact(path: str | Path) -> dict:
    """The artifact's metadata once every check has passed; ArtifactError naming the file otherwise."""
    metadata = read_metadata(path)
    where = Path(metadata["_dir"]) / METADATA_NAME
    weights_path = _weights_file(metadata, where)
    _check_input(metadata, where)
    _check_cell_folder(metadata, where)
    expected = metadata["weights"].get("sha256")
    if not isinstance(expected, str) or len(expected) != 64 or not set(expected) <= SHA256_HEX:
        raise ArtifactError(
            f"{where}: weights.sha256 is {expected!r}; a SHA-256 of {weights_path.name} is required, so that "
            "the weights used are the ones this model.json describes"
        )
    if file_sha256(weights_path) != expected:
        raise ArtifactError(f"{weights_path}: SHA-256 differs from {METADATA_NAME}: the file was changed")
    header, shapes = _safetensors_header(weights_path)
    _check_binding(metadata, header, where, weights_path)
    _check_shapes(metadata, shapes, weights_path)
    return metadata


def _weights_file(metadata: dict, where: Path) -> Path:
    architecture, weights = metadata["architecture"], metadata["weights"]
    if weights is None:
        raise ArtifactError(
            f"{where}: this cell kept no weights (train.keep_weights: false for {architecture}); set "
            f"model_settings.{architecture}.keep_weights true and rerun the cell to use the model"
        )
    if not isinstance(weights, dict):
        raise ArtifactError(f"{where}: weights must be an object with file and sha256, not {weights!r}")
    name = Path(str(metadata["weights"].get("file", "")))
    if name.name != str(name) or not name.name:
        raise ArtifactError(f"{where}: weights file must be a plain name, not {name!s}")
    weights_path = where.parent / name
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: the artifact's weights file is missing")
    _refuse_pickle(weights_path)
    return weights_path


def _check_input(metadata: dict, where: Path) -> None:
    resolution = metadata["resolution"]
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ArtifactError(f"{where}: resolution must be a whole number of pixels, not {resolution!r}")
    recorded = metadata["input"] if isinstance(metadata["input"], dict) else {}
    expected = json.loads(json.dumps(input_spec(metadata["architecture"], resolution)))
    wrong = [key for key in expected if recorded.get(key) != expected[key]]
    wrong += [key for key in recorded if key not in expected]
    if "shape" in wrong:
        raise ArtifactError(
            f"{where}: input.shape is {recorded.get('shape')!r} but resolution is {resolution}: "
            "model.json contradicts itself (edited?)"
        )
    if wrong:
        shown = "; ".join(
            f"input.{k} is {recorded.get(k)!r}, mammoflow feeds {expected.get(k)!r}" for k in wrong
        )
        raise ArtifactError(f"{where}: the model's input is not what mammoflow gives it: {shown}")


def _check_cell_folder(metadata: dict, where: Path) -> None:
    """Inside a results tree the folder names the cell: it must be the cell model.json describes."""
    try:
        cell = paths.parse_cell(where)
    except ValueError:
        return  # an artifact copied elsewhere: its folder says nothing
    stated = {
        "protocol": metadata.get("protocol"),
        "resolution": metadata.get("resolution"),
        "dataset": metadata.get("dataset"),
        "architecture": metadata.get("architecture"),
        "fold": metadata.get("fold"),
    }
    folder = {"protocol": cell.protocol, "resolution": cell.res, "dataset": cell.dataset,
              "architecture": cell.model, "fold": cell.fold}  # fmt: skip
    # Only contradictions: an artifact that does not know a value ("unknown": a store without summary.json)
    # is not refused for it here.
    wrong = [
        f"{k} {stated[k]!r} (the folder: {folder[k]!r})"
        for k in folder
        if stated[k] not in (None, "unknown") and stated[k] != folder[k]
    ]
    if wrong:
        raise ArtifactError(
            f"{where}: this is not the artifact of the cell its folder names: model.json says "
            + ", ".join(wrong)
        )


def _safetensors_header(weights_path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The header's string metadata and every tensor's shape; reads the header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            names = handle.keys()
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in names}
            return handle.metadata() or {}, shapes
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_path}: cannot be read as safetensors: {exc}") from exc


def _check_binding(metadata: dict, header: dict, where: Path, weights_path: Path) -> None:
    if IDENTITY_KEY not in header:
        raise ArtifactError(
            f"{weights_path}: the weights do not record the model.json they were saved with (an artifact "
            "from before mammoflow bound the two), so nothing shows they belong together: retrain the cell"
        )
    saved = json.loads(header[IDENTITY_KEY])
    current = json.loads(weights_identity(metadata))
    if saved != current:
        first = ("architecture", "resolution", "fold", "protocol", "dataset")  # the likeliest edits first
        keys = sorted(
            (k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k)),
            key=lambda k: (first.index(k) if k in first else len(first), k),
        )
        shown = ", ".join(f"{k} {current.get(k)!r} (saved: {saved.get(k)!r})" for k in keys[:3])
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        raise ArtifactError(
            f"{where}: model.json is not the one these weights were saved with: {shown}{more}. It was "
            "edited, or belongs to other weights"
        )


def _check_shapes(metadata: dict, shapes: dict[str, tuple[int, ...]], weights_path: Path) -> None:
    import torch

    try:
        with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised for real
            model = model_from_metadata(metadata)
    except (RuntimeError, NotImplementedError):
        model = model_from_metadata(metadata)  # a model that cannot be built on the meta device
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - shapes.keys())
    extra = sorted(shapes.keys() - expected.keys())
    differ = sorted(k for k in expected.keys() & shapes.keys() if expected[k] != shapes[k])
    if missing or extra or differ:
        found = [f"{len(differ)} of another shape, e.g. {differ[0]} {shapes[differ[0]]} (the model: "
                 f"{expected[differ[0]]})" if differ else "",
                 f"{len(missing)} missing, e.g. {missing[0]}" if missing else "",
                 f"{len(extra)} not in the model, e.g. {extra[0]}" if extra else ""]  # fmt: skip
        raise ArtifactError(
            f"{weights_path}: the weights do not fit {metadata['architecture']} at {metadata['resolution']} "
            f"px as model.json describes it: tensors {'; '.join(f for f in found if f)}"
        )
