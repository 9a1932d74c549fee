"""Stores built from a decoded phantom: lesion boxes land on the lesions, workers do not change bytes; every
reader checks the checksum the manifest records."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from store_factory import write_store

from mammoflow.decode import decode_shard, index_shards
from mammoflow.limits import DecodeSettings
from mammoflow.phantom import PhantomSpec, generate
from mammoflow.preprocess import ProcessOptions
from mammoflow.store import build_store, open_store
from mammoflow.store_integrity import StoreError, read_record, write_manifest

SPEC = dict(patients=8, prevalence=0.5, size_scale=0.12, calcification_fraction=0.0)


def _decoded(root, mass_contrast):
    generate(
        root / "data", PhantomSpec.configured(**SPEC, mass_contrast=mass_contrast), workers=2, progress=False
    )
    decode_shard(
        root / "data", root / "shard", 0, 1, settings=DecodeSettings.configured(working_size=384), workers=2
    )
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
    options = ProcessOptions.configured(resize=resize)
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


# ---------------------------------------------------------------------------------------------- integrity
# Every reader (training cells, GAN stages and FID, Grad-CAM) opens a store through open_store, which checks
# the checksum its manifest records: a changed byte, a truncated file or a relabelled manifest is refused
# with the store's name and the command that rebuilds it.


def _small_store(tmp_path, n=12, res=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, res, res), dtype=np.uint8)
    store = tmp_path / "results/data/16/processed"
    write_store(store, images, (np.arange(n) % 3 == 0).astype(int))
    return store, images


def _refusal(store) -> str:
    with pytest.raises(StoreError) as caught:
        open_store(store)
    message = str(caught.value)
    assert message.startswith(f"store {store}: ") and f"--forcerun {store}/images.npy" in message
    return message


def test_an_inverted_store_is_refused_by_name_through_the_training_command(decoded, tmp_path, capsys):
    """The issue's case: one store's pixels inverted in place (same size). `mammoflow train` exits 2 with
    one line naming the store, before any training."""
    from mammoflow.cli import main
    from mammoflow.folds import make_folds

    store = tmp_path / "store"
    manifest = build_store(decoded / "index.parquet", "processed", 32, store)
    make_folds(manifest, 2, 0).to_parquet(tmp_path / "folds.parquet")
    images = np.load(store / "images.npy", mmap_mode="r+")
    images[:] = 255 - images
    images.flush()
    del images
    folds, cell = str(tmp_path / "folds.parquet"), str(tmp_path / "cell")
    code = main(["train", "--store", str(store), "--folds", folds, "--model", "resnet18", "--fold", "0",
                 "--out", cell, "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [x for x in err.splitlines() if x.startswith("mammoflow train: error:")]
    assert f"store {store}: images.npy differs from the checksum its manifest records, in rows 0-" in line
    assert f"--forcerun {store}/images.npy" in line
    assert not any((tmp_path / "cell").iterdir())  # nothing trained, nothing written


def test_one_changed_byte_is_found_and_its_rows_named(tmp_path, monkeypatch):
    import mammoflow.store_integrity as integrity

    monkeypatch.setattr(integrity, "CHUNK_BYTES", 4 * 16 * 16)  # blocks of 4 rows: rows 0-3, 4-7, 8-11
    store, images = _small_store(tmp_path)
    assert len(read_record(store)["chunks"]) == 3
    loaded, _ = open_store(store)
    np.testing.assert_array_equal(loaded, images)
    data = bytearray((store / "images.npy").read_bytes())
    data[-16 * 16 * 6 + 7] ^= 0x01  # one bit of row 6
    (store / "images.npy").write_bytes(bytes(data))
    assert "in rows 4-7 of 12: the pixels were changed" in _refusal(store)


def test_a_truncated_or_padded_store_is_named(tmp_path):
    store, _ = _small_store(tmp_path)
    path = store / "images.npy"
    full = path.read_bytes()
    path.write_bytes(full[:-100])
    message = _refusal(store)
    assert f"images.npy is truncated: {len(full) - 100:,} bytes, its header ((12, 16, 16)) needs" in message
    assert "mmap length" not in message
    path.write_bytes(full + b"\0")
    assert "images.npy has 1 bytes more than its header" in _refusal(store)
    path.write_bytes(b"not an array")
    assert "images.npy is not a readable .npy file" in _refusal(store)
    path.unlink()
    assert "images.npy not found" in _refusal(store)


def test_a_relabelled_or_unrecorded_manifest_is_refused(tmp_path):
    import pyarrow.parquet as pq

    store, _ = _small_store(tmp_path)
    table = pq.read_table(store / "manifest.parquet")
    manifest = table.to_pandas()
    manifest["cancer"] = 1 - manifest["cancer"]
    relabelled = pa.Table.from_pandas(manifest, preserve_index=False).replace_schema_metadata(
        table.schema.metadata  # the old checksum record kept, the labels changed
    )
    pq.write_table(relabelled, store / "manifest.parquet")
    assert "manifest.parquet was changed after the store was built" in _refusal(store)
    manifest.to_parquet(store / "manifest.parquet")  # pandas alone: no record at all
    assert "its manifest records no checksum of the pixels" in _refusal(store)
    write_manifest(manifest, store)  # a deliberate new store: recorded again, readable again
    assert open_store(store)[1]["cancer"].tolist() == manifest["cancer"].tolist()


def test_images_and_manifest_of_two_builds_are_not_mixed(tmp_path):
    store, images = _small_store(tmp_path)
    np.save(store / "images.npy", images[:6])
    assert "the manifest's record says |u1 [12, 16, 16]" in _refusal(store)


def test_the_record_is_the_same_for_the_same_content(decoded, tmp_path):
    """Two builds (one and two workers) record one checksum; the synthetic store records one as well."""
    for workers in (1, 2):
        build_store(decoded / "index.parquet", "original", 32, tmp_path / f"w{workers}", workers=workers)
    assert read_record(tmp_path / "w1") == read_record(tmp_path / "w2")
    assert read_record(tmp_path / "w1")["shape"] == [len(pd.read_parquet(decoded / "index.parquet")), 32, 32]
