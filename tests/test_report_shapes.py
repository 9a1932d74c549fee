"""The report's "Shapes that ran" from outputs written by the real jobs: two tiny training cells (run_cell,
one micro-batched, one not), a GAN stage (train_stage) with its fid.json (the gan-fid command), a Grad-CAM
job (run_cam). Nothing in the section may come from the configuration."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gan_factory import SMALL, SMALL_FEATURES, stage
from store_factory import write_store

from mammoflow import paths
from mammoflow.classify.train import Cell, TrainSettings, run_cell
from mammoflow.cli import main
from mammoflow.explain.stage import CamJob, CamSettings, run_cam
from mammoflow.folds import make_folds
from mammoflow.gan.data import load_positives
from mammoflow.gan.stage_runtime import RunOptions
from mammoflow.gan.train import train_stage
from mammoflow.report.build import Inputs, build_report

CONFIG = {
    "rsna_dir": "",
    "protocols": ["clean"],
    "resolutions": [32],
    "datasets": ["processed"],
    "models": ["resnet18", "resnet34"],  # resnet34 never runs: counted missing, absent from the shapes
    "folds": {"k": 2},
    "report": {"bootstrap": 20, "seed": 0},
}


def _store(path, n=48, res=32):
    rng = np.random.default_rng(0)
    images = rng.integers(60, 140, (n, res, res)).astype(np.uint8)
    cancer = (np.arange(n) % 3 == 0).astype(int)
    manifest = write_store(path, images, cancer)
    make_folds(manifest, 2, 0).to_parquet(path.parents[1] / "folds.parquet")
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A results tree the real jobs wrote, and the report built from it."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("shapes")
    results = root / "results"
    store = _store(results / "data" / "32" / "processed")
    folds = results / "data" / "folds.parquet"
    # Two folds of one model that ran at different micro-batches: the report must flag the row.
    for fold, micro in ((0, 4), (1, 0)):
        out = Path(paths.cell_dir("clean", 32, "processed", "resnet18", fold, root=results))
        cell = Cell(store=store, folds=folds, model="resnet18", fold=fold, protocol="clean", out=out)
        settings = TrainSettings.configured(
            epochs=1,
            batch_size=8,
            micro_batch=micro,
            max_steps_per_epoch=1,
            recipe="fit_one_cycle",
            pretrained=False,
        )
        run_cell(cell, settings, device="cpu", threads=1)
    stage_dir = paths.gan_stage_dir("clean", "fold0", 16, results)
    positives = load_positives(store, folds, "clean", "fold0", 16)
    # The projected discriminator on random features: the report must say so.
    spec, settings, _ = stage([16], 0.008, **SMALL, batch=4, snapshots=2, grid=2, checkpoint_kimg=0.004,
                              feature_networks=SMALL_FEATURES, feature_weights="random")  # fmt: skip
    train_stage(positives, spec, settings, stage_dir, options=RunOptions(device="cpu", show_progress=False))
    main(
        ["gan-fid", "--networks", f"{stage_dir}/network.pt", "--stores", str(store), "--folds", str(folds),
         "--protocol", "clean", "--part", "fold0", "--images", "24", "--batch", "8", "--inception", "none",
         "--device", "cpu"]
    )  # fmt: skip
    main(
        ["synthesize", "--network", f"{stage_dir}/network.pt", "--res", "16", "--count", "4", "--out",
         paths.synthetic_dir("clean", 16, "fold0", results), "--protocol", "clean", "--part", "fold0",
         "--folds", "2", "--device", "cpu"]
    )  # fmt: skip
    cell0 = paths.cell_dir("clean", 32, "processed", "resnet18", 0, root=results)
    cam_out = paths.cam_dir("clean", 32, "processed", "resnet18", 0, root=results)
    job = CamJob(Path(cell0), store, Path(cam_out), protocol="clean", dataset="processed", fold=0)
    run_cam(job, CamSettings.configured(top_k=3, batch_size=2, examples=2), device="cpu", show_progress=False)
    out = results / "report"
    build_report(Inputs(results, root, CONFIG, None, out))
    return results, out


def _metrics(results, fold):
    cell = paths.cell_dir("clean", 32, "processed", "resnet18", fold, root=results)
    return json.loads((Path(cell) / "metrics.json").read_text())


def test_training_rows_come_from_the_cells_metrics(ran):
    results, out = ran
    section = json.loads((out / "shapes.json").read_text())
    assert (section["training_cells_found"], section["training_cells_expected"]) == (2, 4)
    (row,) = section["training"]  # resnet34 never ran: no row for it
    first, second = _metrics(results, 0), _metrics(results, 1)
    assert (row["model"], row["resolution"], row["cells"]) == ("resnet18", 32, 2)
    assert row["precision"] == first["precision"] == second["precision"]
    assert row["precision_reason"] == first["precision_reason"]
    assert row["effective_batch"] == "8" and row["steps_per_epoch"] == "1" and row["steps_capped"] == "yes"
    assert row["epochs"] == "1" and row["device"] == "cpu"
    assert (first["micro_batch"], second["micro_batch"]) == (4, 8)
    assert row["micro_batch"] == "4–8" and row["disagree"] == ["micro_batch"]
    low, high = sorted(m["peak_host_memory_mib"] for m in (first, second))
    assert row["peak_host_memory_mib"] in (f"{low:,.0f}–{high:,.0f}", f"{low:,.0f}")
    assert row["peak_cuda_memory_mib"] == "not recorded"  # a CPU run records none


def test_gan_and_cam_rows_come_from_their_outputs(ran):
    results, out = ran
    section = json.loads((out / "shapes.json").read_text())
    (stage,) = section["gan"]
    fid = json.loads((Path(paths.gan_stage_dir("clean", "fold0", 16, results)) / "fid.json").read_text())
    assert (stage["stage"], stage["batch"], stage["kimg"], stage["steps"]) == (16, 4, 0.008, 2)
    assert (
        stage["precision"] == "fp32 (CPU)"
        and stage["channels"] == 32  # L2_16_32: the stem's last layer before "to image"
        and "cbase 256, cmax 32 (network 512 / 64" in stage["widths"]
    )
    assert stage["fid_metric"] == fid["metric"] and stage["generated_images"] == 24
    assert stage["real_images"] == fid["real_images"] and stage["comparable_to_fid50k"] is False
    assert stage["streamed"] is True
    assert (
        stage["discriminator"]
        == "projected on RANDOM features (tf_efficientnet_lite0; gan.feature_weights: random)"
    )
    (cam,) = section["cam"]
    summary = json.loads((Path(paths.cam_dir("clean", 32, "processed", "resnet18", 0, results))
                          / "summary.json").read_text())  # fmt: skip
    assert cam["batch"] == "2" and cam["target_layer"] == summary.get("target_layer", "not recorded")
    assert cam["method"] == summary.get("method", "not recorded")
    assert cam["feature_map"] == "×".join(map(str, summary["feature_map"]))


def test_synthetic_rows_name_the_network_that_made_them(ran):
    from mammoflow.atomic import file_sha256

    results, out = ran
    (row,) = json.loads((out / "shapes.json").read_text())["synthetic"]
    network = Path(paths.gan_stage_dir("clean", "fold0", 16, results)) / "network.pt"
    assert (row["store"], row["images"], row["network_px"]) == ("clean 16 px fold0", 4, 16)
    assert (row["network"], row["kind"], row["sha256"]) == (
        "network.pt",
        "mammoflow stage",
        file_sha256(network),
    )
    assert row["published_fid"] is None
    assert "the network that made them" in (out / "index.html").read_text()


def test_page_shows_the_section_and_flags_the_disagreement(ran):
    _, out = ran
    html = (out / "index.html").read_text()
    assert 'id="shapes"' in html and "Shapes that ran" in html
    assert "training resnet18 32 px: its jobs ran with different micro_batch" in html
    assert "2 of 4 cells finished, 2 missing" in html  # the missing cells are still counted
    assert html.count("projected on RANDOM features") >= 2  # Figure 1's caption and the stage table


def test_cam_without_a_recorded_target_layer(ran, tmp_path):
    from mammoflow.report.shapes import cam_rows

    results, _ = ran
    source = Path(paths.cam_dir("clean", 32, "processed", "resnet18", 0, results)) / "summary.json"
    summary = json.loads(source.read_text())
    summary.pop("target_layer", None)
    copy = Path(paths.cam_dir("clean", 32, "processed", "resnet18", 0, tmp_path)) / "summary.json"
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps(summary))
    (row,) = cam_rows(tmp_path)
    assert row["target_layer"] == "not recorded" and row["batch"] == "2"


def test_gan_rows_without_torch_say_what_was_not_read(ran, monkeypatch):
    """The report's conda environment has no torch: network.pt is not read, the batch still comes from
    stats.jsonl, the FID from fid.json, and the row says why the rest is missing."""
    import sys

    from mammoflow.report.shapes import gan_rows

    results, _ = ran
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    (stage,) = gan_rows(results)
    assert (stage["batch"], stage["steps"], stage["kimg"]) == (4, 2, 0.008)
    assert stage["precision"] == stage["widths"] == stage["channels"] == "not recorded"
    assert "torch is not installed" in stage["note"] and stage["generated_images"] == 24
    assert stage["discriminator"].startswith("projected on RANDOM features")  # from stats.jsonl
