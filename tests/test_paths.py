"""The results tree: one function per output, patterns and values from the same function, cells parse back."""

import pytest

from mammoflow import paths


def test_values_and_wildcards_give_the_same_tree():
    assert (
        paths.cell_dir("clean", 256, "processed", "resnet18", 3)
        == "results/train/clean/256/processed/resnet18/fold3"
    )
    pattern = paths.cell_dir("{protocol}", "{res}", "{dataset}", "{model}", "{fold}")
    assert pattern == "results/train/{protocol}/{res}/{dataset}/{model}/fold{fold}"
    assert pattern.format(protocol="clean", res=256, dataset="processed", model="resnet18", fold=3) == (
        paths.cell_dir("clean", 256, "processed", "resnet18", 3)
    )
    assert paths.shard_dir(7) == "results/decoded/shard007"
    assert paths.shard_dir("{shard}") == "results/decoded/shard{shard}"
    assert paths.gan_part("clean", 2) == "fold2" and paths.gan_part("paper", 2) == "all"
    assert paths.store_dir(64, "original", root="/x/results") == "/x/results/data/64/original"


def test_cells_parse_back_from_train_and_cam_paths():
    cell = paths.CellKey("paper", 512, "augmented", "maxvit_nano_rw_256", 4)
    for where in (paths.cell_dir, paths.cam_dir):
        assert paths.parse_cell(where(*cell.__dict__.values(), root="/some where/results")) == cell
        assert paths.parse_cell(where(*cell.__dict__.values()) + "/metrics.json") == cell
    assert cell.key == "paper/512/augmented/maxvit_nano_rw_256/fold4"
    with pytest.raises(ValueError, match="not under train/ or cam/"):
        paths.parse_cell("results/data/256/processed")
