"""The decode stage: shards, working size, errors recorded with reasons, crashes isolated, strict mode."""

import numpy as np
import pandas as pd
import pytest
from dicom_factory import mammo_like, write_dicom

from mammoflow.decode import (
    DataError,
    DecodedImages,
    decode_shard,
    image_path,
    index_shards,
    load_train_table,
    working_shape,
)
from mammoflow.isolated import Crashed, imap_isolated
from mammoflow.limits import DecodeSettings


def _crash_on_negative(x: int) -> int:
    if x < 0:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    return x * 10


def test_isolated_pool_survives_crashes_and_keeps_order():
    items = [1, 2, -1, 3, -2, 4, 5]
    for workers in (1, 3):
        results = list(imap_isolated(_crash_on_negative, items, workers))
        assert [i for i, _ in results] == list(range(len(items)))
        assert [r for _, r in results if not isinstance(r, Crashed)] == [10, 20, 30, 40, 50]
        crashed = [r for _, r in results if isinstance(r, Crashed)]
        assert len(crashed) == 2 and "signal 11" in str(crashed[0])


def _rsna_folder(root, good: int = 5):
    """An RSNA-layout folder with `good` decodable images and four bad files of different kinds."""
    rows = []
    syntaxes = ["raw", "j2k", "jls", "rle"]
    for i in range(good):
        pid, iid = 100 + i // 2, 5000 + i
        stored = mammo_like(rows=300 + 10 * i, cols=240, bits=12, seed=i)
        photometric = "MONOCHROME1" if i == 1 else "MONOCHROME2"
        if photometric == "MONOCHROME1":  # such a scanner stores dense tissue as low values
            stored = 4095 - stored
        write_dicom(
            image_path(root, pid, iid),
            stored,
            syntaxes[i % 4],
            photometric=photometric,
            windows=[(2000, 3000)],
        )
        rows.append((pid, iid, "L" if i % 2 else "R", "CC", int(i == 0)))
    # Damaged files: text, truncated uncompressed (segfaults dicomsdl), missing, no pixel data.
    bad_ids = [9001, 9002, 9003, 9004]
    for iid in bad_ids:
        rows.append((199, iid, "L", "MLO", 0))
    image_path(root, 199, 9001).parent.mkdir(parents=True, exist_ok=True)
    image_path(root, 199, 9001).write_text("not dicom")
    data = write_dicom(root / "tmp.dcm", mammo_like(), "raw").read_bytes()
    image_path(root, 199, 9002).write_bytes(data[: len(data) // 2])
    import pydicom

    ds = pydicom.dcmread(root / "tmp.dcm")
    del ds.PixelData
    ds.save_as(image_path(root, 199, 9004))
    table = pd.DataFrame(rows, columns=["patient_id", "image_id", "laterality", "view", "cancer"])
    table["site_id"] = 1
    table.to_csv(root / "train.csv", index=False)
    return table


def test_decode_shards_index_and_errors(tmp_path):
    table = _rsna_folder(tmp_path / "rsna")
    dirs = [tmp_path / "out" / f"shard{i}" for i in range(2)]
    totals = [
        decode_shard(
            tmp_path / "rsna", d, i, 2, settings=DecodeSettings.configured(working_size=128), workers=2
        )
        for i, d in enumerate(dirs)
    ]
    assert sum(ok for ok, _ in totals) == 5 and sum(bad for _, bad in totals) == 4
    index = index_shards(dirs, tmp_path / "index.parquet", tmp_path / "errors.parquet", max_failed_fraction=1)
    errors = pd.read_parquet(tmp_path / "errors.parquet")
    assert sorted(index["image_id"]) == sorted(table["image_id"][:5])
    reasons = dict(zip(errors["image_id"], errors["reason"], strict=True))
    assert "not a DICOM file" in reasons[9001]
    assert "crashed" in reasons[9002] and "truncated" in reasons[9002]  # dicomsdl died, pydicom said why
    assert reasons[9003] == "file not found"
    assert "no pixel data" in reasons[9004]
    assert set(index.columns) >= {"site_id", "offset", "height", "width", "window_centers", "decoder"}

    images = DecodedImages(index, tmp_path)
    for row, entry in index.iterrows():
        pixels = images.pixels(row)
        assert pixels.shape == (entry.height, entry.width) == working_shape(entry.rows, entry.cols, 128)
        assert max(pixels.shape) == 128
    # MONOCHROME1 inverted at decode: its breast (left) is bright like everyone else's.
    m1 = index.index[index["photometric"] == "MONOCHROME1"][0]
    px = images.pixels(m1).astype(float)
    assert px[:, :20].mean() > 3 * px[:, -20:].mean()


def test_decode_is_independent_of_workers(tmp_path):
    _rsna_folder(tmp_path / "rsna", good=4)
    for workers in (1, 3):
        decode_shard(
            tmp_path / "rsna",
            tmp_path / f"w{workers}",
            0,
            1,
            settings=DecodeSettings.configured(working_size=100),
            workers=workers,
        )
    assert (tmp_path / "w1/pixels.u16").read_bytes() == (tmp_path / "w3/pixels.u16").read_bytes()
    a, b = (pd.read_parquet(tmp_path / f"w{w}/meta.parquet") for w in (1, 3))
    pd.testing.assert_frame_equal(
        a.drop(columns=["decode_seconds", "resize_seconds"]),
        b.drop(columns=["decode_seconds", "resize_seconds"]),
    )


def test_strict_fails_naming_the_file(tmp_path):
    _rsna_folder(tmp_path / "rsna", good=1)
    with pytest.raises(DataError, match=r"9001\.dcm: .*not a DICOM file"):
        decode_shard(
            tmp_path / "rsna",
            tmp_path / "out",
            0,
            1,
            settings=DecodeSettings.configured(working_size=64, strict=True),
        )
    assert not (tmp_path / "out" / "meta.parquet").exists()


def test_bad_train_csv(tmp_path):
    with pytest.raises(DataError, match=r"train\.csv: not found"):
        load_train_table(tmp_path)
    pd.DataFrame({"patient_id": [1], "image_id": [2]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        load_train_table(tmp_path)
    pd.DataFrame(
        {"patient_id": [1, 1], "image_id": [2, 2], "laterality": "L", "view": "CC", "cancer": 0}
    ).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"image_id: 1 id.s. occur more than once: 2 .lines 2, 3."):
        load_train_table(tmp_path)


def test_working_shape_never_upscales():
    assert working_shape(3328, 2560, 1024) == (1024, 788)
    assert working_shape(300, 200, 1024) == (300, 200)
    assert np.isclose(working_shape(2294, 1914, 512)[1] / 512, 1914 / 2294, atol=0.01)


def test_reduce_switch_on_the_command_line(tmp_path):
    """decode.reduce reaches the stage: JPEG 2000 at a reduced level by default, in full with --no-reduce."""
    from mammoflow.cli import main

    root = tmp_path / "rsna"
    write_dicom(
        image_path(root, 1, 10), mammo_like(rows=400, cols=320, bits=12), "j2k", windows=[(2000, 3000)]
    )
    pd.DataFrame(
        {"patient_id": [1], "image_id": [10], "laterality": ["L"], "view": ["CC"], "cancer": [0]}
    ).to_csv(root / "train.csv", index=False)
    levels = {}
    for flag in ("--reduce", "--no-reduce"):
        out = tmp_path / flag
        args = ["decode", "--data-dir", str(root), "--out", str(out), "--shard", "0", "--shards", "1"]
        assert main([*args, "--working-size", "100", flag]) == 0
        meta = pd.read_parquet(out / "meta.parquet").iloc[0]
        levels[flag] = (meta["level"], meta["decoder"], meta["decoded_height"], meta["height"])
    # 400 / 4 = 100 >= the working size: two levels skipped.
    assert levels == {"--reduce": (2, "pillow-j2k", 100, 100), "--no-reduce": (0, "dicomsdl", 400, 100)}


def test_too_many_failures_fail_the_run_after_the_list_is_written(tmp_path):
    _rsna_folder(tmp_path / "rsna", good=5)  # 5 good, 4 bad: 44 % failed
    decode_shard(tmp_path / "rsna", tmp_path / "s", 0, 1, settings=DecodeSettings.configured(working_size=64))
    paths = (tmp_path / "index.parquet", tmp_path / "errors.parquet")
    with pytest.raises(DataError, match=r"^4 of 9 files \(44.4%\) could not be decoded, more than .*=0.01; "):
        index_shards([tmp_path / "s"], *paths)
    assert len(pd.read_parquet(paths[1])) == 4 and not paths[0].exists()
    summary = (tmp_path / "summary.json").read_text()
    assert (
        "decode: 5 images decoded, 4 could not be decoded, 0 lossy-compressed; the list with reasons"
        in summary
    )
    index_shards([tmp_path / "s"], *paths, max_failed_fraction=0.5)
    assert len(pd.read_parquet(paths[0])) == 5


def test_the_failure_list_named_is_the_one_that_stays(tmp_path):
    """With a failure list (the rule's log, which Snakemake keeps), the message and summary name it."""
    _rsna_folder(tmp_path / "rsna", good=5)
    decode_shard(tmp_path / "rsna", tmp_path / "s", 0, 1, settings=DecodeSettings.configured(working_size=64))
    kept = tmp_path / "logs" / "decode_failed.csv"
    with pytest.raises(DataError, match=r"; the list: .*logs/decode_failed\.csv$"):
        index_shards(
            [tmp_path / "s"], tmp_path / "index.parquet", tmp_path / "errors.parquet", failure_list=kept
        )
    assert sorted(pd.read_csv(kept)["image_id"]) == [9001, 9002, 9003, 9004]
    assert "logs/decode_failed.csv" in (tmp_path / "summary.json").read_text()
    # A run that passes writes the list too (the same rows), and its summary names errors.parquet.
    index_shards([tmp_path / "s"], tmp_path / "index.parquet", tmp_path / "errors.parquet", 0.5, kept)
    assert len(pd.read_csv(kept)) == 4 and "errors.parquet" in (tmp_path / "summary.json").read_text()


def test_index_names_shards_relative_to_itself_and_refuses_absolute_ones(tmp_path):
    _rsna_folder(tmp_path / "rsna", good=2)
    decode_shard(
        tmp_path / "rsna",
        tmp_path / "decoded" / "shard000",
        0,
        1,
        settings=DecodeSettings.configured(working_size=64),
    )
    index_path = tmp_path / "decoded" / "index.parquet"
    index = index_shards([tmp_path / "decoded" / "shard000"], index_path, tmp_path / "e.parquet", 1.0)
    assert set(index["shard_dir"]) == {"shard000"}
    moved = tmp_path / "elsewhere"
    (tmp_path / "decoded").rename(moved)
    images = DecodedImages.open(moved / "index.parquet")
    assert images.pixels(0).shape == (index["height"][0], index["width"][0])
    # An index from before: shard folders by absolute path, possibly another run's.
    old = index.assign(shard_dir=str(moved / "shard000"))
    with pytest.raises(DataError, match=r"by absolute path .*rebuild it: snakemake --forcerun decode_index"):
        DecodedImages(old, moved)
