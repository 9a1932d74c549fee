"""VOI LUT Sequence and Modality LUT Sequence (PS3.3 C.11): carried from the header to meta.parquet and
applied by preprocessing's windowing exactly as pydicom's apply_modality_lut / apply_voi_lut apply them."""

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_factory import mammo_like, write_dicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence

from mammoflow.decode import decode_shard, image_path
from mammoflow.limits import DecodeSettings
from mammoflow.preprocess import ProcessOptions, window_image


def _lut_item(descriptor: list[int], table: np.ndarray, as_ow: bool) -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", descriptor)
    if as_ow:
        item.add_new("LUTData", "OW", table.astype("<u2").tobytes())
    else:
        item.add_new("LUTData", "US", [int(v) for v in table])
    return item


def _with_luts(path, photometric: str, modality: bool, as_ow: bool):
    stored = mammo_like(rows=180, cols=150, bits=12, seed=7)
    write_dicom(path, stored, "raw", bits=12, photometric=photometric, windows=[(2000, 3000)])
    ds = pydicom.dcmread(path)
    if modality:  # a non-linear modality LUT into 14 bits, mapping from stored value 0
        table = np.rint(np.sqrt(np.arange(4096) / 4095) * 16383).astype(np.uint16)
        item = _lut_item([4096, 0, 16], table, as_ow)
        item.ModalityLUTType = "US"
        ds.ModalityLUTSequence = Sequence([item])
        first, entries = 2000, 12000  # the VOI LUT works on the modality LUT's output (0..16383)
    else:
        first, entries = 300, 3000
    # Two alternative VOI LUTs: an S curve and a steep ramp, both 12 bits per entry.
    ramp = np.linspace(-6, 6, entries)
    s_curve = np.rint(4095 / (1 + np.exp(-ramp))).astype(np.uint16)
    steep = np.clip(np.rint(np.linspace(-2000, 6000, entries)), 0, 4095).astype(np.uint16)
    ds.VOILUTSequence = Sequence(
        [_lut_item([entries, first, 12], s_curve, as_ow), _lut_item([entries, first, 12], steep, as_ow)]
    )
    ds.save_as(path)
    return ds


@pytest.mark.parametrize("decoder", ["dicomsdl", "pydicom"])
@pytest.mark.parametrize(
    ("photometric", "modality", "as_ow"),
    [("MONOCHROME2", False, False), ("MONOCHROME2", True, True), ("MONOCHROME1", True, False)],
)
def test_lut_sequences_match_pydicom(tmp_path, decoder, photometric, modality, as_ow):
    root = tmp_path / "rsna"
    path = image_path(root, 1, 10)
    ds = _with_luts(path, photometric, modality, as_ow)
    pd.DataFrame(
        {"patient_id": [1], "image_id": [10], "laterality": ["L"], "view": ["CC"], "cancer": [0]}
    ).to_csv(root / "train.csv", index=False)
    # Working size above the image size: the decoded image is the stored one, value for value.
    decode_shard(
        root,
        tmp_path / "out",
        0,
        1,
        settings=DecodeSettings.configured(working_size=512, decoders=(decoder,)),
    )
    meta = pd.read_parquet(tmp_path / "out" / "meta.parquet").iloc[0]
    assert meta["decoder"] == decoder
    assert len(meta["voi_luts"]) == 2 and (len(meta["modality_lut"]) == 4096) == modality
    pixels = np.fromfile(tmp_path / "out" / "pixels.u16", "<u2").reshape(meta["height"], meta["width"])
    for index in (0, 1):
        ours = window_image(pixels, meta, None, ProcessOptions.configured(window_index=index))
        reference = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=index) / 4095.0
        if photometric == "MONOCHROME1":
            reference = 1.0 - reference  # bright = dense, as mammoflow keeps every image
        np.testing.assert_allclose(ours, reference, atol=1e-6)
        assert np.ptp(ours) > 0.5  # the table really shaped the image


def test_window_used_when_no_lut(tmp_path):
    """Without LUT Sequences the header's window is used as before (the LUT columns are empty)."""
    root = tmp_path / "rsna"
    stored = mammo_like(rows=120, cols=100, bits=12)
    write_dicom(image_path(root, 1, 10), stored, "raw", bits=12, windows=[(2000, 3000)])
    pd.DataFrame(
        {"patient_id": [1], "image_id": [10], "laterality": ["L"], "view": ["CC"], "cancer": [0]}
    ).to_csv(root / "train.csv", index=False)
    decode_shard(root, tmp_path / "out", 0, 1, settings=DecodeSettings.configured(working_size=512))
    meta = pd.read_parquet(tmp_path / "out" / "meta.parquet").iloc[0]
    assert len(meta["voi_luts"]) == 0 and len(meta["modality_lut"]) == 0
    lo, hi = 2000 - 0.5 - (3000 - 1) / 2, 2000 - 0.5 + (3000 - 1) / 2
    expected = np.clip((stored - lo) / (hi - lo), 0, 1)
    ours = window_image(stored, meta, None, ProcessOptions.configured())
    np.testing.assert_allclose(ours, expected, atol=1e-5)
