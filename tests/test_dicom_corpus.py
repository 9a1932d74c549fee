"""pydicom's own test corpus through both decoders, each in the crash-isolated path the decode stage uses.

Every file either decodes to exactly pydicom's ``pixel_array`` (bits above BitsStored masked off,
MONOCHROME1 inverted: the documented transformations) or is rejected with a reason; 32-bit, 1-bit,
signed, colour and multi-frame data are rejected rather than cast, and no file takes the run down.
"""

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from mammoflow.decode import DecodeTask, decode_to_working_size
from mammoflow.dicom import DicomError, read_with_dicomsdl, read_with_pydicom
from mammoflow.isolated import Crashed, imap_isolated

CORPUS = sorted(p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*") if p.is_file())
READERS = {"dicomsdl": read_with_dicomsdl, "pydicom": read_with_pydicom}


def _decode(item: tuple[str, Path]):
    decoder, path = item
    try:
        image = READERS[decoder](path)
    except DicomError as exc:
        return str(exc)
    return image.pixels, image.inverted, image.header.bits_stored


def _reference(path: Path) -> np.ndarray | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.asarray(pydicom.dcmread(path, force=True).pixel_array)
        except Exception:
            return None


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, object]]:
    found = {}
    for decoder in READERS:
        results = imap_isolated(_decode, [(decoder, path) for path in CORPUS], workers=2)
        found[decoder] = {CORPUS[i].name + f"#{i}": result for i, result in results}
    return found


@pytest.mark.parametrize("decoder", sorted(READERS))
def test_every_file_is_exact_or_rejected_with_a_reason(outcomes, decoder):
    assert len(CORPUS) >= 79
    decoded = []
    for (key, result), path in zip(outcomes[decoder].items(), CORPUS, strict=True):
        if isinstance(result, Crashed):
            continue  # the stage records it and hands the file to the next decoder
        if isinstance(result, str):
            assert result.strip(), f"{key}: rejected without a reason"
            continue
        pixels, inverted, bits = result
        reference = _reference(path)
        assert reference is not None, f"{key}: decoded, but pydicom cannot decode it"
        expected = reference.astype(np.int64) & ((1 << bits) - 1)
        if inverted:
            expected = (1 << bits) - 1 - expected
        assert pixels.dtype == np.uint16
        np.testing.assert_array_equal(pixels, expected, err_msg=key)
        decoded.append(key)
    assert len(decoded) >= 6, decoded  # the grey unsigned files of the corpus do decode


@pytest.mark.parametrize("decoder", sorted(READERS))
def test_non_mammograms_are_rejected_not_cast(outcomes, decoder):
    reasons = {key.split("#")[0]: r for key, r in outcomes[decoder].items() if isinstance(r, str)}
    for name in ("rtdose_1frame.dcm", "rtdose_expb_1frame.dcm", "rtdose_rle_1frame.dcm"):
        assert "BitsAllocated=32" in reasons[name], name
    # 32 bits too, with NumberOfFrames "1A": pydicom reads that as a frame count and stops there.
    assert "BitsAllocated=32" in reasons["badVR.dcm"] or "NumberOfFrames=1A" in reasons["badVR.dcm"]
    assert "BitsAllocated=1" in reasons["liver_1frame.dcm"]
    assert "signed pixel data" in reasons["CT_small.dcm"]
    assert "not a grayscale image" in reasons["SC_rgb_rle.dcm"]


def test_the_stage_chain_survives_the_whole_corpus():
    """The decode stage's worker body with its full chain (reduced J2K first): a result for every file."""
    tasks = [DecodeTask(str(p), 64, ("pillow-j2k", "dicomsdl", "pydicom")) for p in CORPUS]
    results = list(imap_isolated(decode_to_working_size, tasks, workers=2))
    assert [i for i, _ in results] == list(range(len(CORPUS)))
    decoded = [r for _, r in results if isinstance(r, tuple)]
    assert all(r[0].dtype == np.uint16 and max(r[0].shape) <= 64 for r in decoded)
    assert len(decoded) >= 6
