"""The model artifact: half-precision safetensors + JSON, loaded without the training config, and never a
pickle."""

import json

import numpy as np
import pytest
import torch

from mammoflow.classify.artifact import (
    METADATA_NAME,
    WEIGHTS_NAME,
    ArtifactError,
    load_artifact,
    read_metadata,
    save_artifact,
)
from mammoflow.classify.artifact_checks import check_artifact
from mammoflow.classify.models import build_model, normalize_batch, positive_probability
from mammoflow.stats import bootstrap_metrics, f1_optimal_threshold, specificity_threshold

torch.set_num_threads(2)


def _saved(tmp_path, name="resnet18", res=32):
    torch.manual_seed(0)
    model, _ = build_model(name, res)
    model.eval()
    save_artifact(tmp_path, model, {"architecture": name, "resolution": res, "protocol": "clean", "fold": 0})
    return model


@pytest.mark.parametrize("name", ["resnet18", "maxvit_nano_rw_256"])
def test_round_trip_in_half_precision(tmp_path, name):
    model = _saved(tmp_path, name)
    loaded, metadata = load_artifact(tmp_path)
    assert metadata["architecture"] == name and metadata["weights"]["dtype"] == "float16"
    assert metadata["input"]["timm_kwargs"]["in_chans"] == 1 and metadata["versions"]["torch"]
    assert metadata["head"]["kind"] == "fastai" and metadata["output"]["classes"][1] == "cancer"
    x = normalize_batch(
        torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8))
    )
    with torch.no_grad():
        before, after = positive_probability(model(x)), positive_probability(loaded(x))
    assert float((before - after).abs().max()) < 5e-3  # fp16 weights: well inside bf16 autocast's error
    # Half the size of the fp32 state dict.
    fp32 = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert (tmp_path / WEIGHTS_NAME).stat().st_size < 0.55 * fp32


def test_an_artifact_of_another_format_version_is_refused_by_name(tmp_path):
    """Version 1 (mammoflow 0.1: timm's one-logit head, weights not bound to model.json) and a future
    version each get a line that names the file, the version and what to do."""
    model, _ = build_model("resnet18", 32)
    save_artifact(tmp_path, model, {"architecture": "resnet18", "resolution": 32})
    metadata = json.loads((tmp_path / METADATA_NAME).read_text())
    refusals = ((1, "format version 1 .*retrain the cell"), (3, "format version 3; .*reads version 2"))
    for version, message in refusals:
        metadata["format_version"] = version
        (tmp_path / METADATA_NAME).write_text(json.dumps(metadata))
        with pytest.raises(ArtifactError, match=f"{METADATA_NAME}: artifact {message}"):
            load_artifact(tmp_path)


def test_one_model_gives_one_file(tmp_path):
    """Byte for byte: the header's metadata (two keys) is written sorted, not in safetensors' hash-map
    order, which differed between two runs of one training cell."""
    model, _ = build_model("resnet18", 32)
    described = {"architecture": "resnet18", "resolution": 32, "protocol": "clean", "fold": 0}
    files = set()
    for k in range(8):
        save_artifact(tmp_path / str(k), model, described)
        files.add((tmp_path / str(k) / WEIGHTS_NAME).read_bytes())
    assert len(files) == 1


def test_a_cell_may_keep_no_weights(tmp_path):
    """train.keep_weights: false writes model.json alone; loading it says why there is nothing to load, and
    predict's search for cells passes it over."""
    from mammoflow import paths
    from mammoflow.predict.ensemble import find_cells

    model, _ = build_model("resnet18", 32)
    for fold, keep in ((0, False), (1, True)):
        cell = tmp_path / paths.cell_dir("clean", 32, "processed", "resnet18", fold, root="results")
        described = {"architecture": "resnet18", "resolution": 32, "protocol": "clean", "fold": fold}
        save_artifact(cell, model, {**described, "dataset": "processed"}, keep_weights=keep)
        assert (cell / WEIGHTS_NAME).is_file() == keep
    kept_none = tmp_path / paths.cell_dir("clean", 32, "processed", "resnet18", 0, root="results")
    assert read_metadata(kept_none)["weights"] is None
    with pytest.raises(ArtifactError, match=r"this cell kept no weights \(train.keep_weights: false"):
        load_artifact(kept_none)
    found = find_cells(tmp_path / "results")
    assert found["fold"].tolist() == [1]


def test_pickled_weights_are_refused(tmp_path):
    """A torch.save checkpoint in place of the safetensors file is never unpickled."""
    model = _saved(tmp_path)
    torch.save(model.state_dict(), tmp_path / WEIGHTS_NAME)
    with pytest.raises(ArtifactError, match=r"pickled PyTorch checkpoint.*arbitrary code"):
        load_artifact(tmp_path)
    # A bare (legacy, non-zip) pickle too, and the check comes before anything reads the payload.
    import pickle

    (tmp_path / WEIGHTS_NAME).write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ArtifactError, match="pickled"):
        load_artifact(tmp_path)


def test_pickle_named_in_metadata_is_refused(tmp_path):
    model = _saved(tmp_path)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    metadata = json.loads((tmp_path / METADATA_NAME).read_text())
    metadata["weights"] = {"file": "model.pt"}
    (tmp_path / METADATA_NAME).write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="pickled"):
        load_artifact(tmp_path)


def test_changed_or_foreign_files_are_refused(tmp_path):
    _saved(tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_artifact(tmp_path)
    (tmp_path / METADATA_NAME).write_text('{"format": "something-else"}')
    with pytest.raises(ArtifactError, match="not a mammoflow-model artifact"):
        read_metadata(tmp_path)
    with pytest.raises(ArtifactError, match="no model artifact"):
        read_metadata(tmp_path / "nowhere")


def test_thresholds():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.7, 0.95])
    # Calling 0.95, 0.9, 0.7: F1 = 2*2/(3+2) = 0.8, the best; the threshold is the lowest called value.
    assert f1_optimal_threshold(y, p) == pytest.approx(0.7)
    # 8 negatives: 90 % specificity allows no false positive, 85 % one (the 0.9).
    assert specificity_threshold(y, p, 0.9) == pytest.approx(0.95)
    t = specificity_threshold(y, p, 0.85)
    assert (p[y == 0] < t).mean() >= 0.85 and t == pytest.approx(0.7)
    assert f1_optimal_threshold(np.zeros(3), np.ones(3)) is None
    assert specificity_threshold(np.ones(3), p[:3]) is None


def test_bootstrap_intervals_hold_the_value():
    import pandas as pd

    rng = np.random.default_rng(1)
    table = pd.DataFrame(
        {"patient_id": np.repeat(np.arange(40), 2), "cancer": np.repeat(rng.integers(0, 2, 40), 2)}
    )
    table["probability"] = np.clip(0.3 * table["cancer"] + rng.uniform(0, 0.7, len(table)), 0, 1)
    out = bootstrap_metrics(table, 0.5, resamples=200)
    for metric in ("auc", "pf1", "sensitivity", "specificity", "sens_at_90spec"):
        assert out[metric]["lo"] <= out[metric]["value"] <= out[metric]["hi"], metric
    assert out["auc"]["value"] > 0.7


# ---------------------------------------------------------------------------------------------- checks
# classify/artifact_checks.py: what `mammoflow predict` checks in every artifact before decoding anything.


def _edit(folder, change) -> None:
    path = folder / METADATA_NAME
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_a_weights_hash_is_required(tmp_path):
    _saved(tmp_path)
    _edit(tmp_path, lambda d: d["weights"].update(sha256=None))
    with pytest.raises(
        ArtifactError, match=r"weights.sha256 is None; a SHA-256 of model.safetensors is required"
    ):
        check_artifact(tmp_path)


def test_an_edited_resolution_or_normalisation_is_refused(tmp_path):
    """The issue's case: model.json's resolution edited from 32 to 16, its input.shape left; then both edited
    consistently (the weights still say 32); then the normalisation."""
    _saved(tmp_path)
    original = (tmp_path / METADATA_NAME).read_text()
    _edit(tmp_path, lambda d: d.update(resolution=16))
    with pytest.raises(ArtifactError, match=r"input.shape is \[32, 32\] but resolution is 16"):
        check_artifact(tmp_path)
    _edit(tmp_path, lambda d: d["input"].update(shape=[16, 16]))
    edited = r"model.json is not the one these weights were saved with: resolution 16 \(saved: 32\), input"
    with pytest.raises(ArtifactError, match=edited):
        load_artifact(tmp_path)
    (tmp_path / METADATA_NAME).write_text(original)
    _edit(tmp_path, lambda d: d["input"].update(mean=0.5))
    with pytest.raises(ArtifactError, match=r"input.mean is 0.5, mammoflow feeds 0.449"):
        check_artifact(tmp_path)


def test_another_folds_artifact_is_refused(tmp_path):
    """Fold 1's artifact copied into fold 0's folder; fold 1's weights beside fold 0's model.json (with or
    without its hash updated); two artifacts of one fold in one ensemble."""
    import shutil

    from mammoflow import paths
    from mammoflow.atomic import file_sha256
    from mammoflow.predict.ensemble import ModelChoice, checked_artifacts

    model, _ = build_model("resnet18", 32)
    cells = [
        tmp_path / paths.cell_dir("clean", 32, "processed", "resnet18", k, root="results") for k in (0, 1)
    ]
    for fold, cell in enumerate(cells):
        save_artifact(cell, model, {"architecture": "resnet18", "resolution": 32, "protocol": "clean",
                                    "fold": fold, "dataset": "processed"})  # fmt: skip
    assert check_artifact(cells[0])["fold"] == 0
    own = tmp_path / "fold0 own"
    shutil.copytree(cells[0], own)
    for name in (METADATA_NAME, WEIGHTS_NAME):
        shutil.copy(cells[1] / name, cells[0] / name)
    moved = r"not the artifact of the cell its folder names: model.json says fold 1 \(the folder: 0\)"
    with pytest.raises(ArtifactError, match=moved):
        check_artifact(cells[0])
    shutil.copy(own / METADATA_NAME, cells[0] / METADATA_NAME)
    with pytest.raises(ArtifactError, match=r"SHA-256 differs from model\.json"):
        check_artifact(cells[0])
    _edit(cells[0], lambda d: d["weights"].update(sha256=file_sha256(cells[0] / WEIGHTS_NAME)))
    with pytest.raises(ArtifactError, match=r"saved with: fold 0 \(saved: 1\)"):
        check_artifact(cells[0])

    twice = ModelChoice("clean", 32, "processed", "resnet18", cells=[cells[1], tmp_path / "fold1 copy"])
    shutil.copytree(cells[1], tmp_path / "fold1 copy")
    with pytest.raises(ArtifactError, match="clean/32/processed/resnet18 fold 1 again"):
        checked_artifacts([twice])


def test_weights_of_another_architecture_are_refused_by_shape(tmp_path):
    """An artifact whose weights and model.json were saved together but do not describe one model (a model
    saved under the wrong name): the model model.json describes is built on the meta device and compared."""
    model, _ = build_model("resnet34", 32)
    save_artifact(
        tmp_path, model, {"architecture": "resnet18", "resolution": 32, "protocol": "clean", "fold": 0}
    )
    shapes = (
        r"do not fit resnet18 at 32 px as model.json describes it: "
        r"tensors \d+ not in the model, e.g. body.layer1"
    )
    with pytest.raises(ArtifactError, match=shapes):
        check_artifact(tmp_path)


def test_weights_that_do_not_name_their_model_json_are_refused(tmp_path):
    """Weights saved without the model.json they belong to (before the two were bound): nothing shows they
    belong together, even with a matching hash."""
    from safetensors.torch import load_file, save_file

    from mammoflow.atomic import file_sha256

    _saved(tmp_path)
    save_file(
        load_file(str(tmp_path / WEIGHTS_NAME)), str(tmp_path / WEIGHTS_NAME), metadata={"format": "pt"}
    )
    _edit(tmp_path, lambda d: d["weights"].update(sha256=file_sha256(tmp_path / WEIGHTS_NAME)))
    with pytest.raises(ArtifactError, match=r"do not record the model\.json they were saved with"):
        check_artifact(tmp_path)
