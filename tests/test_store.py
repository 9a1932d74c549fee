"""Stores built from a decoded phantom: lesion boxes land on the lesions, workers do not change bytes."""

import numpy as np
import pandas as pd
import pytest

from mammoflow.decode import decode_shard, index_shards
from mammoflow.phantom import PhantomSpec, generate
from mammoflow.preprocess import ProcessOptions
from mammoflow.store import build_store, open_store

SPEC = dict(patients=8, prevalence=0.5, size_scale=0.12, calcification_fraction=0.0)


def _decoded(root, mass_contrast):
    generate(root / "data", PhantomSpec(**SPEC, mass_contrast=mass_contrast), workers=2, progress=False)
    decode_shard(root / "data", root / "shard", 0, 1, working_size=384, workers=2)
    index_shards([root / "shard"], root / "index.parquet", root / "errors.parquet")
    return root


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    return _decoded(tmp_path_factory.mktemp("visible"), mass_contrast=0.4)


@pytest.fixture(scope="module")
def invisible(tmp_path_factory):
    """The same phantom with masses too faint to change a pixel: the difference is the lesion."""
    return _decoded(tmp_path_factory.mktemp("invisible"), mass_contrast=1e-6)


@pytest.mark.parametrize(("dataset", "resize"), [("original", "stretch"), ("processed", "stretch"),
                                                 ("processed", "pad")])  # fmt: skip
def test_lesion_boxes_follow_crop_and_resize(decoded, invisible, dataset, resize, tmp_path):
    options = ProcessOptions(resize=resize)
    manifest = build_store(decoded / "index.parquet", dataset, 128, tmp_path / "a", options,
                           decoded / "data/lesions.csv")  # fmt: skip
    build_store(invisible / "index.parquet", dataset, 128, tmp_path / "b", options)
    with_mass, _ = open_store(tmp_path / "a")
    without, _ = open_store(tmp_path / "b")
    positives = manifest[manifest["cancer"] == 1]
    assert len(positives) >= 4 and positives["lesion_x0"].notna().all()
    inside_share = []
    for _, entry in positives.iterrows():
        diff = np.abs(with_mass[entry["row"]].astype(float) - without[entry["row"]].astype(float))
        x0, y0 = int(entry["lesion_x0"]) - 2, int(entry["lesion_y0"]) - 2
        x1, y1 = int(np.ceil(entry["lesion_x1"])) + 2, int(np.ceil(entry["lesion_y1"])) + 2
        peak_y, peak_x = np.unravel_index(np.argmax(diff), diff.shape)
        assert x0 <= peak_x < x1 and y0 <= peak_y < y1, (
            entry["image_id"],
            (peak_x, peak_y),
            (x0, y0, x1, y1),
        )
        inside_share.append(diff[max(0, y0) : y1, max(0, x0) : x1].sum() / diff.sum())
    # Normalization spreads a little of the change over the whole breast; most of it is the mass.
    assert np.median(inside_share) > 0.5, inside_share


def test_store_is_independent_of_workers(decoded, tmp_path):
    for workers in (1, 2):
        build_store(decoded / "index.parquet", "processed", 64, tmp_path / f"w{workers}", workers=workers)
    a, ma = open_store(tmp_path / "w1")
    b, mb = open_store(tmp_path / "w2")
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(ma, mb)
