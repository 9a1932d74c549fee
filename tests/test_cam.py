"""The `cam` stage: Grad-CAM per architecture, alignment, box geometry, scoring, the cell-level outputs."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from store_factory import write_store
from torch import nn

from mammoflow.classify.artifact import save_artifact
from mammoflow.classify.models import PAPER_MODELS, build_model
from mammoflow.classify.train import Cell, TrainSettings, run_cell
from mammoflow.cli import main
from mammoflow.explain.boxes import (
    Peak,
    chance_hit_rate,
    contains,
    find_peak,
    fixed_box,
    iou,
    score,
    threshold_box,
)
from mammoflow.explain.gradcam import (
    Grid,
    UnknownArchitecture,
    align_maps,
    explained_layer,
    feature_grid,
    grad_cam_maps,
    target_layer,
)
from mammoflow.explain.scores import COLUMNS, NO_BOXES
from mammoflow.explain.stage import CamJob, CamSettings, run_cam
from mammoflow.folds import make_folds

torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------------- helpers


def positive_head(model: nn.Module, seed: int = 0) -> nn.Module:
    """fastai's head made to rise with every feature (a random one weighs many negatively, and the ReLU'd
    map is then often 0): positive hidden weights, and the cancer output alone reading them. The features'
    weights spread over orders of magnitude: equal ones would cancel on a LayerNorm'd map (MaxViT's), whose
    channels sum to zero at every position."""
    generator = torch.Generator().manual_seed(seed)
    hidden, out = model.head[4].weight, model.head[8].weight
    with torch.no_grad():
        spread = torch.rand(hidden.shape[1], generator=generator) ** 4
        hidden.copy_(torch.rand(hidden.shape, generator=generator) * spread)
        out.zero_()
        out[1].copy_(torch.rand(out.shape[1], generator=generator))
    return model


def _blob_store(path, n=160, res=96, blob=32, seed=0, boxes=True):
    """Noise; every second image has a bright blob x blob square at a random place, its lesion box known."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 140, (n, res, res)).astype(np.uint8)
    cancer = (np.arange(n) % 2 == 0).astype(np.int8)
    lesion = np.full((n, 4), np.nan)
    for i in np.flatnonzero(cancer):
        y, x = rng.integers(0, res - blob + 1, 2)
        images[i, y : y + blob, x : x + blob] = 200
        lesion[i] = (x, y, x + blob, y + blob)
    write_store(path, images, cancer, lesions=lesion if boxes else None)
    return path


def _fake_cell(path, store, probabilities, model="resnet18", seed=0, source="real"):
    """A training cell as the train stage leaves it: the model artifact (random weights) and
    predictions.parquet."""
    manifest = pd.read_parquet(store / "manifest.parquet")
    res = np.load(store / "images.npy", mmap_mode="r").shape[1]
    torch.manual_seed(seed)
    net, _ = build_model(model, res)
    path.mkdir(parents=True)
    save_artifact(path, net, {"architecture": model, "resolution": res})
    predictions = manifest.iloc[: len(probabilities)][
        ["image_id", "patient_id", "laterality", "view", "cancer", "source"]
    ].copy()
    predictions["source"] = source
    predictions["fold"] = 0
    predictions["probability"] = np.asarray(probabilities, np.float64)
    predictions.to_parquet(path / "predictions.parquet")
    return path


# The study's setting: Grad-CAM on the last map, whatever its size (3 x 3 at 96 px)
LESIONS_ONLY = CamSettings.configured(
    threshold=1.0, top_k=0, all_lesions=True, examples=3, min_cells=1, method="gradcam"
)


# ---------------------------------------------------------------------------------------------- localisation


def test_trained_model_points_at_the_planted_blob(tmp_path):
    """resnet18 learns "is there a bright square" in 40 steps; its Grad-CAM peak then lands in the square on
    held-out positives. Measured (deterministic on CPU): aligned 0.975; with the map stretched as fastai and
    grad-cam show it 0.3; the peaks scored against the other images' boxes 0.23; chance (box area) 0.11.
    The untrained network points there too, 0.95 (0.725 with the one-logit average-pooled head of before):
    fastai's head max-pools, and random filters answer a bright square most, so on this stimulus the
    untrained map is no null; the box rotation is."""
    store = _blob_store(tmp_path / "store")
    make_folds(pd.read_parquet(store / "manifest.parquet"), 2, 0).to_parquet(tmp_path / "folds.parquet")
    cell = Cell(store, tmp_path / "folds.parquet", "resnet18", 0, "clean", tmp_path / "cell")
    settings = TrainSettings.configured(
        epochs=4, batch_size=8, lr=2e-3, recipe="fit_one_cycle", pretrained=False, oversample_positive=1
    )
    assert run_cell(cell, settings, threads=2)["metrics"]["auc"] > 0.95

    summary = run_cam(CamJob(tmp_path / "cell", store, tmp_path / "cam"), LESIONS_ONLY, show_progress=False)
    boxes = pd.read_parquet(tmp_path / "cam/boxes.parquet")
    assert summary["images"] == summary["scored"] == len(boxes) == (boxes["cancer"] == 1).sum() > 30
    assert summary["chance_hit_rate"] == pytest.approx((32 / 96) ** 2)
    assert summary["hit_rate"] >= 0.85, summary
    assert summary["alignment"]["shift_from_stretched_px"] == [-15.5, -15.5]
    assert summary["hit_rate_stretched"] <= summary["hit_rate"] - 0.3  # the half-cell misalignment costs
    assert summary["max_probability_difference"] < 1e-3  # the model and store the cell was trained on

    # The null: the same peaks scored against the other images' boxes (every rotation of the box list).
    lesions = boxes[["lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1"]].to_numpy()
    peaks = list(zip(boxes.peak_x, boxes.peak_y, strict=True))
    null = np.mean(
        [
            contains(tuple(b), x, y)
            for k in range(1, len(peaks))
            for b, (x, y) in zip(np.roll(lesions, k, 0), peaks, strict=True)
        ]
    )
    assert null < 0.35 and summary["hit_rate"] - null > 0.5, null

    # The same network before training (same seed): its predictions are not the cell's, and its peaks are
    # no closer to the squares than the trained network's.
    torch.manual_seed(0)
    untrained, _ = build_model("resnet18", 96)
    save_artifact(tmp_path / "cell", untrained, {"architecture": "resnet18", "resolution": 96})
    before = run_cam(CamJob(tmp_path / "cell", store, tmp_path / "cam0"), LESIONS_ONLY, show_progress=False)
    assert before["scored"] == summary["scored"] and before["max_probability_difference"] > 0.1
    assert before["hit_rate"] <= summary["hit_rate"], (before["hit_rate"], summary["hit_rate"])


def test_alignment_matches_the_receptive_field_of_a_resnet():
    """feature_grid reads the cells' centres off the strided layers; the gradient of one cell's activation
    with respect to the input (its effective receptive field) peaks at that same place."""
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 128)
    layer, _ = target_layer(model, "resnet18")
    grid, shape = feature_grid(model, layer, 128)
    assert shape == (4, 4) and grid == Grid(0.5, 0.5, 32.0, 32.0)
    x = torch.randn(4, 1, 128, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    features = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: features.setdefault("out", out))
    model.eval()(x)
    handle.remove()
    features["out"][:, :, 2, 1].sum().backward()
    erf = cv2.GaussianBlur(x.grad.abs().mean((0, 1)).numpy(), (0, 0), 8)
    y, x_ = np.unravel_index(int(erf.argmax()), erf.shape)
    assert abs(x_ + 0.5 - (grid.x0 + 1 * grid.sx)) <= 1 and abs(y + 0.5 - (grid.y0 + 2 * grid.sy)) <= 1


def test_align_maps_moves_the_stretched_map():
    stretched = np.zeros((1, 64, 64), np.float32)
    stretched[0, 16, 48] = 1.0  # where a stretched 2 x 2 map shows cell (0, 1)'s centre
    aligned = align_maps(stretched, Grid(0.5, 0.5, 32, 32), 2, 2)
    y, x = np.unravel_index(int(aligned[0].argmax()), (64, 64))
    assert (abs(x - 32.5) <= 0.5, abs(y - 0.5) <= 0.5) == (True, True)
    assert align_maps(stretched, Grid.stretched(64, 2, 2), 2, 2) is stretched


# ---------------------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_every_architecture_gives_one_map_per_image(name):
    torch.manual_seed(0)
    model = positive_head(build_model(name, 64)[0])
    layer, layer_name = target_layer(model, name)
    assert layer_name == {"efficientnet_b0": "bn2", "maxvit_nano_rw_256": "norm"}.get(name, "layer4[-1]")
    grid, shape = feature_grid(model, layer, 64)
    assert shape == (2, 2) and grid == Grid(0.5, 0.5, 32.0, 32.0)
    rng = np.random.default_rng(0)
    images = rng.integers(40, 120, (2, 64, 64)).astype(np.uint8)
    images[0, 4:20, 6:22] = 230
    images[1, 40:58, 38:60] = 230
    both = grad_cam_maps(model, layer, images, batch_size=2, show_progress=False)
    assert both.maps.shape == (2, 64, 64) and both.raw.shape == (2, 2, 2)
    assert all(m.max() - m.min() > 0.5 for m in both.maps) and (both.raw.max((1, 2)) > 0).all()
    assert np.abs(both.maps[0] - both.maps[1]).max() > 0.05
    for i in range(2):  # a batch gives each image its own map
        alone = grad_cam_maps(model, layer, images[i : i + 1], batch_size=1, show_progress=False)
        np.testing.assert_allclose(alone.maps[0], both.maps[i], atol=1e-4)
        np.testing.assert_allclose(alone.raw[0], both.raw[i], rtol=1e-3, atol=1e-9)


def test_unknown_architecture_fails_clearly_or_falls_back():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 1),
    )
    with pytest.raises(UnknownArchitecture, match="no Grad-CAM target layer is known for model 'tiny'"):
        target_layer(net, "tiny")
    layer, layer_name = target_layer(net, "tiny", fallback_res=32)
    assert layer is net[3] and layer_name.startswith("3 (fallback")
    grid, shape = feature_grid(net, layer, 32)
    assert shape == (8, 8) and grid == Grid(0.5, 0.5, 4.0, 4.0)
    with pytest.raises(UnknownArchitecture, match="no module returns a 4-D feature map"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 1)), "mlp", fallback_res=32)


# ---------------------------------------------------------------------------------------------- geometry


def test_fixed_box_is_centred_and_cut_at_the_edges():
    assert fixed_box(32, 32, 15, 64, 64) == (25, 25, 40, 40)  # odd side: 7 pixels either side
    assert fixed_box(32, 32, 16, 64, 64) == (24, 24, 40, 40)  # even side: 8 before, 7 after
    assert fixed_box(2, 60, 16, 64, 64) == (0, 52, 10, 64)  # cut, not shifted inwards
    assert fixed_box(0, 0, 1, 64, 64) == (0, 0, 1, 1)


def test_threshold_box_takes_the_region_around_the_peak():
    up = np.zeros((20, 30), np.float32)
    up[2:6, 3:9] = 1.0  # the peak's region
    up[6, 9] = 0.6  # touches it diagonally: 8-connected, part of it
    up[12:18, 20:28] = 0.9  # a separate region above the threshold
    assert threshold_box(up, 4, 3, 0.5) == (3, 2, 10, 7)
    assert threshold_box(up, 4, 3, 0.95) == (3, 2, 9, 6)
    assert threshold_box(np.zeros((8, 8), np.float32), 4, 4, 0.5) == (0, 0, 8, 8)  # flat: everything


def test_hit_and_iou():
    lesion = (10.0, 20.0, 20.0, 30.0)  # half-open: pixels 10..19 x 20..29
    assert contains(lesion, 10, 20) and contains(lesion, 19, 29)
    assert not contains(lesion, 20, 25) and not contains(lesion, 15, 30) and not contains(lesion, 9, 25)
    assert contains((10.4, 0, 11, 1), 10, 0) and not contains((10.6, 0, 11, 1), 10, 0)  # pixel centre 10.5
    assert iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 5, 5), (5, 5, 9, 9)) == 0.0
    assert iou((0, 0, 10, 10), (2.5, 0, 5, 10)) == pytest.approx(0.25)
    peak = Peak(12, 22, 1, False)
    assert score(peak, (5, 15, 21, 31), lesion) == (True, pytest.approx(100 / 256))
    assert score(Peak(12, 22, 4, True), (5, 15, 21, 31), lesion)[0] is False  # a constant map never hits
    hit, overlap = score(peak, (5, 15, 21, 31), None)
    assert hit is None and np.isnan(overlap)
    assert chance_hit_rate([(0, 0, 32, 32), (0, 0, 64, 16), (-10, -10, 16, 16)], 64, 64) == pytest.approx(
        (1024 + 1024 + 256) / 3 / 4096
    )
    assert chance_hit_rate([], 64, 64) is None


def test_peak_of_a_plateau_and_of_flat_maps():
    raw = np.array([[3.0, 1.0], [1.0, 0.5]], np.float32)
    up = cv2.resize(raw / 3, (64, 64))  # as grad-cam upsamples: the corner cell becomes a 16 x 16 plateau
    assert int(np.argmax(up)) == 0  # np.argmax would say (0, 0)
    assert find_peak(up, raw) == Peak(15, 15, 1, False)  # the plateau pixel nearest the cell centre (16, 16)
    assert find_peak(up, raw, (0.5, 0.5, 32, 32)) == Peak(0, 0, 1, False)  # aligned cell centre
    tied = np.array([[2.0, 2.0], [1.0, 0.5]], np.float32)
    assert find_peak(cv2.resize(tied / 2, (64, 64)), tied).ties == 2
    for flat in (np.zeros((2, 2), np.float32), np.full((2, 2), 0.7, np.float32), np.ones((1, 1), np.float32)):
        assert find_peak(np.zeros((64, 64), np.float32), flat) == Peak(32, 32, flat.size, True)


# ---------------------------------------------------------------------------------------------- the stage


def _check_outputs(out, n, map_size):
    boxes = pd.read_parquet(out / "boxes.parquet")
    assert list(boxes.columns) == list(COLUMNS) and len(boxes) == n
    assert np.load(out / "maps.npy").shape == (n, map_size, map_size)
    assert np.load(out / "maps.npy").dtype == np.float16
    assert (out / "figure6.png").stat().st_size < 1_000_000
    return boxes, json.loads((out / "summary.json").read_text())


def test_cell_without_positives_gives_empty_outputs(tmp_path):
    store = _blob_store(tmp_path / "store", n=12, res=64, blob=16)
    cell = _fake_cell(tmp_path / "train/clean/64/processed/resnet18/fold0", store, np.full(12, 0.1))
    settings = CamSettings.configured(threshold=0.5, top_k=0, all_lesions=False, map_size=8)
    run_cam(CamJob(cell, store, tmp_path / "cam"), settings, show_progress=False)
    _, summary = _check_outputs(tmp_path / "cam", 0, 8)
    assert summary["images"] == summary["predicted_positive"] == summary["scored"] == 0
    assert summary["hit_rate"] is None and summary["mean_iou"] is None and summary["chance_hit_rate"] is None
    assert summary["scorable"] is False and summary["note"].startswith("no images to explain")
    assert (summary["protocol"], summary["dataset"], summary["fold"]) == ("clean", "processed", 0)


def test_real_data_without_lesion_boxes_through_the_command_line(tmp_path):
    """The RSNA case: no lesion boxes anywhere. Also: synthetic validation images (paper protocol) are
    read from the synthetic store, and the rows come highest probability first."""
    store = _blob_store(tmp_path / "store", n=10, res=64, boxes=False)
    synthetic = _blob_store(tmp_path / "synthetic", n=4, res=64, seed=1, boxes=False)
    cell = _fake_cell(tmp_path / "cell", store, [0.9, 0.2, 0.6, 0.1, 0.3])
    predictions = pd.read_parquet(cell / "predictions.parquet")
    extra = (
        pd.read_parquet(synthetic / "manifest.parquet")
        .iloc[:2][predictions.columns[:6]]
        .assign(source="synthetic", fold=0, probability=[0.7, 0.05])
    )
    pd.concat([predictions, extra]).to_parquet(cell / "predictions.parquet")
    settings = json.dumps({"threshold": 0.5, "top_k": 4, "box": "threshold", "map_size": 16, "threads": 2})
    args = ["cam", "--cell", str(cell), "--store", str(store), "--settings", settings, "--out"]
    assert main([*args, str(tmp_path / "nosyn")]) == 2  # synthetic rows need their store
    assert main([*args, str(tmp_path / "cam"), "--synthetic", str(synthetic), "--dataset", "augmented"]) == 0
    boxes, summary = _check_outputs(tmp_path / "cam", 4, 16)
    assert boxes["probability"].tolist() == [0.9, 0.7, 0.6, 0.3]
    assert boxes["source"].tolist() == ["real", "synthetic", "real", "real"]
    assert boxes["predicted_positive"].tolist() == [True, True, True, False]
    assert boxes["hit"].isna().all() and boxes["iou"].isna().all() and boxes["lesion_x0"].isna().all()
    assert summary["scorable"] is False and NO_BOXES in summary["note"]
    assert summary["images"] == 4 and summary["predicted_positive"] == 3 and summary["scored"] == 0
    assert summary["hit_rate"] is None and summary["box"]["mode"] == "threshold"
    assert summary["dataset"] == "augmented" and summary["target_layer"] == "layer2[-1]"  # cam.min_cells 8
    assert "layer4[-1]'s map is 2 x 2 at 64 px" in summary["target_layer_note"]
    assert ((boxes.box_x1 > boxes.box_x0) & (boxes.box_y1 > boxes.box_y0)).all()


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"cam: unknown setting\(s\) topk"):
        CamSettings.configured(topk=3)
    with pytest.raises(ValueError, match=r"cam\.box: 'tight' is not one of \['fixed', 'threshold'\]"):
        CamSettings.configured(box="tight")
    assert CamSettings.configured(threads=4, top_k=2).top_k == 2


# ------------------------------------------------------------------------------------- layer and method


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "maxvit_nano_rw_256"])
def test_hirescam_and_grad_cam_on_the_last_map_differ_only_through_max_pooling(name):
    """fastai's head reads the last map through concat pooling. Its average half gives every position the
    same gradient: with the max half's weights at zero HiResCAM's element-wise product is Grad-CAM's map,
    number for number; the max half sends gradient to each channel's maximum only, and the maps part."""
    torch.manual_seed(0)
    model = positive_head(build_model(name, 64)[0])
    layer, _ = target_layer(model, name)
    images = np.random.default_rng(1).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    grad = grad_cam_maps(model, layer, images, 3, show_progress=False, method="gradcam")
    hires = grad_cam_maps(model, layer, images, 3, show_progress=False, method="hirescam")
    assert np.abs(hires.raw - grad.raw).max() > 1e-3 * float(grad.raw.max())
    features = model.head[2].num_features // 2  # concat pooling: max features first, then average
    with torch.no_grad():
        model.head[4].weight[:, :features] = 0
    grad = grad_cam_maps(model, layer, images, 3, show_progress=False, method="gradcam")
    hires = grad_cam_maps(model, layer, images, 3, show_progress=False, method="hirescam")
    np.testing.assert_allclose(hires.raw, grad.raw, rtol=1e-4, atol=1e-6 * float(grad.raw.max()))


def test_an_earlier_stage_is_explained_where_the_last_map_is_too_small():
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 32)
    layer, name, why = explained_layer(model, "resnet18", 256, min_cells=8)
    assert (name, why) == ("layer4[-1]", None)  # 8 x 8 at 256 px: the paper's layer
    layer, name, why = explained_layer(model, "resnet18", 32, min_cells=8)
    assert layer is model.body.layer1[-1] and "layer4[-1]'s map is 1 x 1 at 32 px" in why
    assert feature_grid(model, layer, 32)[1] == (8, 8)
    assert explained_layer(model, "resnet18", 32, min_cells=4)[1] == "layer2[-1]"
    assert explained_layer(model, "resnet18", 32, min_cells=64)[1] == "layer1[-1]"  # the largest there is
    for arch, expected in (("efficientnet_b0", "blocks[1]"), ("maxvit_nano_rw_256", "stages[0]")):
        other, _ = build_model(arch, 32)
        chosen, chosen_name, _ = explained_layer(other, arch, 32, min_cells=8)
        assert chosen_name == expected and feature_grid(other, chosen, 32)[1] == (8, 8)
