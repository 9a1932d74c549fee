"""Reduced-resolution JPEG 2000 decoding (decode.reduce): the level rule, the codestream facts it reads,
and, on real-size mammograms, that the processed stores of the reduced and the full path agree."""

import io

import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from dicom_factory import mammo_like, mammo_textured, write_codestream_dicom, write_dicom
from PIL import Image
from pydicom.uid import JPEG2000, JPEG2000Lossless

from mammoflow import j2k
from mammoflow.decode import DecodedImages, decode_shard, image_path, index_shards
from mammoflow.dicom import read_image
from mammoflow.limits import DecodeSettings
from mammoflow.preprocess import ProcessOptions, prepare_original, prepare_processed


def _pillow_codestream(stored: np.ndarray, resolutions: int, jp2: bool = False) -> bytes:
    """16-bit precision, ``resolutions - 1`` decomposition levels, reversible (lossless) code."""
    out = io.BytesIO()
    image = Image.fromarray(stored.astype(np.uint16))  # mode I;16
    image.save(out, format="JPEG2000", num_resolutions=resolutions, no_jp2=not jp2)
    return out.getvalue()


def test_main_header_facts():
    stored = mammo_like(300, 240, bits=12)
    raw = _pillow_codestream(stored, 7)
    assert j2k.read_main_header(raw) == j2k.Codestream(240, 300, 1, 16, False, 6, reversible=True)
    assert j2k.read_main_header(_pillow_codestream(stored, 4, jp2=True)).levels == 3
    with pytest.raises(j2k.CodestreamError, match="no SOC"):
        j2k.read_main_header(b"\x00" * 64)


@pytest.mark.parametrize(
    ("rows", "cols", "levels", "working", "level"),
    [
        (4096, 3328, 5, 1024, 2),  # 1024 x 832; an eighth (512) is below 768 = 3/4 of the working size
        (3328, 2560, 5, 1024, 2),  # 832 x 640 >= 768
        (2294, 1914, 5, 1024, 1),  # 1147 x 957; a quarter (574) would be below 768
        (5355, 4915, 5, 1024, 2),  # 1339
        (4096, 3328, 1, 1024, 1),  # only one level in the codestream
        (1000, 800, 5, 1024, 0),  # half (500) is below 768
        (4096, 3328, 6, 256, 4),  # 256 >= 192
    ],
)
def test_deepest_level_keeping_three_quarters_of_the_working_size(rows, cols, levels, working, level):
    long_side = j2k.min_long_side(working)
    assert long_side == working * 3 // 4
    assert j2k.choose_level(rows, cols, levels, long_side) == level
    kept = max(j2k.reduced_size(rows, level), j2k.reduced_size(cols, level))
    assert kept >= min(long_side, max(rows, cols))


def test_precision_above_bits_stored_with_high_bits_is_read_in_full(tmp_path):
    """A 16-bit codestream under BitsStored 12 with garbage high bits: masked as a full decode masks."""
    stored = mammo_like(600, 500, bits=12, seed=4)
    garbage = stored | np.uint16(0x8000)
    path = write_codestream_dicom(
        tmp_path / "g.dcm", garbage, _pillow_codestream(garbage, 6), str(JPEG2000Lossless), bits=12
    )
    image = read_image(path, ("pillow-j2k", "dicomsdl"), reduce_to=128)
    assert image.decoder == "dicomsdl" and image.level == 0
    np.testing.assert_array_equal(image.pixels, stored)
    clean = write_codestream_dicom(
        tmp_path / "c.dcm", stored, _pillow_codestream(stored, 6), str(JPEG2000Lossless), bits=12
    )
    image = read_image(clean, ("pillow-j2k", "dicomsdl"), reduce_to=128)
    assert image.decoder == "pillow-j2k" and image.level == 2 and image.pixels.shape == (150, 125)


# Real detector sizes, as the RSNA scanners write them (5-6 wavelet levels, as clinical encoders do).
REAL = [
    # rows, cols, bits, photometric, window, voi, how the codestream is made
    (4096, 3328, 12, "MONOCHROME2", [(2047, 4095)], "LINEAR", "openjpeg-lossless"),
    (2294, 1914, 14, "MONOCHROME1", [(8000, 12000)], "SIGMOID", "openjpeg-lossless"),
    (3518, 2800, 16, "MONOCHROME2", None, None, "pillow-6-levels"),
    (2294, 1914, 12, "MONOCHROME2", [(2000, 3000)], "LINEAR", "openjpeg-lossy"),
]
LEVELS = [2, 1, 2, 1]  # 3518 x 2800 at 880 px: above 3/4 of the working size 1024


def _real_size_folder(root):
    rows = []
    for i, (height, width, bits, photometric, windows, voi, codec) in enumerate(REAL):
        stored = mammo_textured(height, width, bits, seed=i)
        if photometric == "MONOCHROME1":
            stored = (1 << bits) - 1 - stored
        path = image_path(root, 1 + i // 2, 100 + i)
        header = dict(bits=bits, photometric=photometric, windows=windows, voi=voi)
        if codec == "openjpeg-lossless":  # pydicom -> pylibjpeg-openjpeg: 5 decomposition levels
            write_dicom(path, stored, "j2k", **header)
        elif codec == "pillow-6-levels":
            write_codestream_dicom(
                path, stored, _pillow_codestream(stored, 7), str(JPEG2000Lossless), **header
            )
        else:
            import pydicom

            write_dicom(path, stored, "raw", **header)
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000, stored, encoding_plugin="pylibjpeg", j2k_cr=[8])
            ds.save_as(path)
        rows.append((1 + i // 2, 100 + i, "LR"[i % 2], "CC", 0))
    pd.DataFrame(rows, columns=["patient_id", "image_id", "laterality", "view", "cancer"]).to_csv(
        root / "train.csv", index=False
    )


def test_reduced_and_full_paths_agree_on_real_size_images(tmp_path):
    _real_size_folder(tmp_path / "rsna")
    indexes = {}
    for reduce in (False, True):
        shard = tmp_path / f"reduce_{reduce}"
        decode_shard(
            tmp_path / "rsna",
            shard,
            0,
            1,
            settings=DecodeSettings.configured(working_size=1024, reduce=reduce),
        )
        indexes[reduce] = index_shards(
            [shard], tmp_path / f"i{reduce}.parquet", tmp_path / f"e{reduce}.parquet"
        )
    full, reduced = indexes[False], indexes[True]
    assert list(full["level"]) == [0, 0, 0, 0] and list(reduced["level"]) == LEVELS
    assert set(reduced["decoder"]) == {"pillow-j2k"} and "pillow-j2k" not in set(full["decoder"])
    assert list(reduced["lossy"]) == [False, False, False, True]
    for (height, width, *_), level, entry in zip(REAL, LEVELS, reduced.itertuples(), strict=True):
        assert (entry.decoded_height, entry.decoded_width) == (-(-height // 2**level), -(-width // 2**level))
    for column in ("height", "width", "rows", "cols", "window_centers", "inverted", "bits_stored"):
        assert full[column].astype(str).tolist() == reduced[column].astype(str).tolist(), column

    a, b = DecodedImages(full, tmp_path), DecodedImages(reduced, tmp_path)
    figures = []
    for row in range(len(full)):
        for res in (256, 512):
            x = prepare_processed(
                a.pixels(row), full.iloc[row], res, ProcessOptions.configured(), a.mask_source(row)
            )
            y = prepare_processed(
                b.pixels(row), reduced.iloc[row], res, ProcessOptions.configured(), b.mask_source(row)
            )
            diff = np.abs(x.image.astype(np.int16) - y.image)
            original = np.abs(
                prepare_original(a.pixels(row), res).image.astype(np.int16)
                - prepare_original(b.pixels(row), res).image
            )
            figures.append(
                (
                    row,
                    LEVELS[row],
                    res,
                    x.crop == y.crop,
                    diff.mean(),
                    np.percentile(diff, 99),
                    original.mean(),
                )
            )
    print(
        "\nrow level res same_crop processed_mean processed_p99 original_mean"
    )  # README figures (pytest -s)
    for figure in figures:
        print(" ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in figure))
    # The crop box is found on the same mask source in both paths (decode.mask_source), so it is the same
    # box, and the processed stores agree within a grey level on average, at both levels and for the 9/7
    # (lossy) code too. Row 0's half-disc has a one-pixel step edge, where a box found on each path's own
    # image landed a mask pixel apart (4 working pixels).
    for row, _level, res, same_crop, mean, _, original_mean in figures:
        assert same_crop and mean <= 1.0, (row, res, mean)
        # The original set scales by the image's min, which the low-pass's ringing at a step would move
        # without j2k.clamp_dark_ringing (4.5 on row 0).
        assert original_mean <= 1.0, (row, res, original_mean)
    # The mask source is made from the reduced decode, in the full path too.
    assert list(full["mask_source_level"]) == list(reduced["mask_source_level"]) == LEVELS


def test_processed_stores_within_one_grey_level_on_every_image(tmp_path):
    """Issue 12's bound on the phantom's three JPEG 2000 scanners at their real detector sizes (4 images
    each, 5 wavelet levels as the phantom writes them): both paths, then the processed stores at 256 and
    512, every image within 1 grey level on average (figures with ``pytest -s``, README "Performance")."""
    from mammoflow.phantom import PhantomSpec, generate

    generate(
        tmp_path / "rsna", PhantomSpec.configured(patients=3, size_scale=1.0, prevalence=0.34), progress=False
    )
    indexes = {}
    for reduce in (False, True):
        shard = tmp_path / f"reduce_{reduce}"
        decode_shard(
            tmp_path / "rsna",
            shard,
            0,
            1,
            settings=DecodeSettings.configured(working_size=1024, reduce=reduce),
        )
        indexes[reduce] = index_shards(
            [shard], tmp_path / f"i{reduce}.parquet", tmp_path / f"e{reduce}.parquet"
        )
    full, reduced = indexes[False], indexes[True]
    assert len(full) == 12 and set(full["level"]) == {0}
    levels = dict(zip(reduced["rows"], reduced["level"], strict=True))
    assert levels == {3328: 2, 4096: 2, 2294: 1}, levels  # 832, 1024, 1147 px
    a, b = DecodedImages(full, tmp_path), DecodedImages(reduced, tmp_path)
    print("\nsize level res same_crop mean p99 original_mean")
    means, originals = [], []
    for row in range(len(full)):
        for res in (256, 512):
            x = prepare_processed(
                a.pixels(row), full.iloc[row], res, ProcessOptions.configured(), a.mask_source(row)
            )
            y = prepare_processed(
                b.pixels(row), reduced.iloc[row], res, ProcessOptions.configured(), b.mask_source(row)
            )
            diff = np.abs(x.image.astype(np.int16) - y.image)
            means.append(diff.mean())
            entry = reduced.iloc[row]
            original = prepare_original(a.pixels(row), res).image.astype(np.int16)
            originals.append(np.abs(original - prepare_original(b.pixels(row), res).image).mean())
            figures = (entry.rows, entry.cols, entry.level, res, x.crop == y.crop, diff.mean())
            print(*figures, np.percentile(diff, 99), originals[-1])
    assert max(means) <= 1.0, max(means)
    # Not issue 12's bound: the original set scales by min and max, extremes of the noise (<= 1.9 measured).
    assert max(originals) <= 2.5, max(originals)


def test_reduced_decode_is_the_same_bytes_for_any_worker_count(tmp_path):
    root = tmp_path / "rsna"
    for i in range(4):
        write_dicom(
            image_path(root, 1, 10 + i), mammo_textured(1200, 1000, 12, seed=i), "j2k", windows=[(2000, 3000)]
        )
    pd.DataFrame(
        {"patient_id": 1, "image_id": range(10, 14), "laterality": "L", "view": "CC", "cancer": 0}
    ).to_csv(root / "train.csv", index=False)
    for workers in (1, 2):
        decode_shard(
            root,
            tmp_path / f"w{workers}",
            0,
            1,
            settings=DecodeSettings.configured(working_size=256, reduce=True),
            workers=workers,
        )
    assert (tmp_path / "w1/pixels.u16").read_bytes() == (tmp_path / "w2/pixels.u16").read_bytes()
    meta = pd.read_parquet(tmp_path / "w2/meta.parquet")
    assert set(meta["level"]) == {2} and set(meta["decoder"]) == {"pillow-j2k"}


def test_htj2k_reduced_and_full(tmp_path):
    """HTJ2K lossless (OpenJPH-encoded fixture, 5 levels): read reduced by Pillow's OpenJPEG, in full by
    pydicom; dicomsdl is not given the syntax."""
    path = DATA / "htj2k_lossless.dcm"
    full = read_image(path)
    assert full.decoder == "pydicom" and "dicomsdl is not used for HTJ2K Lossless" in _reason(path)
    reduced = read_image(path, ("pillow-j2k", "dicomsdl", "pydicom"), reduce_to=100)
    assert reduced.decoder == "pillow-j2k" and reduced.level == 2 and reduced.pixels.shape == (112, 90)
    box = full.pixels.reshape(112, 4, 90, 4).mean(axis=(1, 3))
    assert (
        np.corrcoef(reduced.pixels.ravel(), box.ravel())[0, 1] > 0.98
    )  # the same picture, a quarter the size
    assert not full.header.lossy


def _reason(path) -> str:
    from mammoflow.dicom import DicomError, read_with_dicomsdl

    with pytest.raises(DicomError) as caught:
        read_with_dicomsdl(path)
    return str(caught.value)


@pytest.mark.parametrize("bits", [8, 12, 14, 16])
def test_reduced_values_are_stored_values(tmp_path, bits):
    """Pillow scales 9-16 bit samples up to 16 bits; the reduced reader undoes it for every precision."""
    stored = mammo_textured(640, 512, bits, seed=bits)
    path = write_dicom(tmp_path / "x.dcm", stored, "j2k", bits=bits)
    image = read_image(path, ("pillow-j2k", "dicomsdl"), reduce_to=160)
    assert image.decoder == "pillow-j2k" and image.level == 2 and image.pixels.shape == (160, 128)
    box = stored.reshape(160, 4, 128, 4).mean(axis=(1, 3))
    # A wrong shift would be off by a factor of 2 or more; the lifting rounds by about a stored level.
    assert abs(float(image.pixels.mean()) - float(box.mean())) < 0.01 * ((1 << bits) - 1)
    assert int(image.pixels.max()) <= (1 << bits) - 1
