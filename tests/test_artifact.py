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
from mammoflow.classify.models import LEGACY_HEAD, build_model, normalize_batch, positive_probability
from mammoflow.predict.thresholds import bootstrap_metrics, pf1_threshold, specificity_threshold

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


def test_an_artifact_of_format_version_1_still_loads(tmp_path):
    """Cells trained before fastai's head: timm's one-logit classifier, read back as it was trained, and
    its probability is the logit's sigmoid."""
    torch.manual_seed(0)
    legacy, _ = build_model("resnet18", 32, head=LEGACY_HEAD)
    legacy.eval()
    save_artifact(tmp_path, legacy, {"architecture": "resnet18", "resolution": 32})
    metadata = json.loads((tmp_path / METADATA_NAME).read_text())
    metadata["format_version"] = 1
    for key in ("head", "output"):
        metadata.pop(key)
    (tmp_path / METADATA_NAME).write_text(json.dumps(metadata))
    loaded, read = load_artifact(tmp_path)
    assert read["head"] == LEGACY_HEAD
    x = normalize_batch(torch.from_numpy(np.full((2, 32, 32), 100, np.uint8)))
    with torch.no_grad():
        assert loaded(x).shape == (2, 1)
        torch.testing.assert_close(
            positive_probability(loaded(x)), torch.sigmoid(legacy(x))[:, 0], atol=5e-3, rtol=0
        )
    metadata["format_version"] = 3
    (tmp_path / METADATA_NAME).write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="reads versions 1, 2"):
        read_metadata(tmp_path)


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
    assert pf1_threshold(y, p) == pytest.approx(0.7)
    # 8 negatives: 90 % specificity allows no false positive, 85 % one (the 0.9).
    assert specificity_threshold(y, p, 0.9) == pytest.approx(0.95)
    t = specificity_threshold(y, p, 0.85)
    assert (p[y == 0] < t).mean() >= 0.85 and t == pytest.approx(0.7)
    assert pf1_threshold(np.zeros(3), np.ones(3)) is None and specificity_threshold(np.ones(3), p[:3]) is None


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
