"""The DICOM reader: dicomsdl and pydicom agree bit for bit, MONOCHROME1 is inverted, bad files say why."""

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DATA
from dicom_factory import SYNTAXES, mammo_like, write_dicom

from mammoflow.dicom import DicomError, read_image, read_with_dicomsdl, read_with_pydicom


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
@pytest.mark.parametrize("bits", [12, 14, 16])
def test_decoders_agree_with_encoded_values(tmp_path, syntax, bits):
    stored = mammo_like(bits=bits, seed=bits)
    path = write_dicom(tmp_path / f"{syntax}.dcm", stored, syntax=syntax, bits=bits)
    fast, reference = read_with_dicomsdl(path), read_with_pydicom(path)
    assert fast.decoder == "dicomsdl" and reference.decoder == "pydicom"
    np.testing.assert_array_equal(fast.pixels, stored)
    np.testing.assert_array_equal(reference.pixels, stored)
    assert fast.header.transfer_syntax == str(SYNTAXES[syntax][0])


@pytest.mark.parametrize("name", ["jpeg_lossless_sv1_mono1", "jpeg_lossless_sv6"])
def test_jpeg_lossless_process_14(name):
    """Files encoded by dcmtk (tests/data/make_jpeg_lossless.sh): both decoders, exact values."""
    source = pydicom.dcmread(DATA / f"{name}.source.dcm")
    expected = source.pixel_array.astype(np.uint16)
    if source.PhotometricInterpretation == "MONOCHROME1":
        expected = (1 << source.BitsStored) - 1 - expected
    for reader in (read_with_dicomsdl, read_with_pydicom):
        image = reader(DATA / f"{name}.dcm")
        assert image.header.transfer_syntax.startswith("1.2.840.10008.1.2.4.")
        np.testing.assert_array_equal(image.pixels, expected)


def test_monochrome1_is_inverted_and_header_read(tmp_path):
    stored = mammo_like(bits=14)
    path = write_dicom(
        tmp_path / "m1.dcm",
        stored,
        "j2k",
        bits=14,
        photometric="MONOCHROME1",
        windows=[(9000, 12000), (8000, 6000)],
        voi="SIGMOID",
    )
    image = read_image(path)
    assert image.inverted
    np.testing.assert_array_equal(image.pixels, (1 << 14) - 1 - stored)
    assert image.header.window_centers == [9000, 8000]
    assert image.header.window_widths == [12000, 6000]
    assert image.header.voi_lut_function == "SIGMOID"
    assert image.header.pixel_spacing_mm == pytest.approx(0.1)


def test_header_without_window(tmp_path):
    path = write_dicom(tmp_path / "nowin.dcm", mammo_like(), "rle", voi=None)
    header = read_image(path).header
    assert header.window_centers == [] and header.voi_lut_function == "LINEAR"


def _truncated(tmp_path: Path, syntax: str) -> Path:
    good = write_dicom(tmp_path / f"good_{syntax}.dcm", mammo_like(), syntax)
    data = good.read_bytes()
    bad = tmp_path / f"truncated_{syntax}.dcm"
    bad.write_bytes(data[: len(data) * 2 // 3])
    return bad


def test_bad_files_raise_with_reason(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(DicomError, match="not a DICOM file"):
        read_image(text)
    with pytest.raises(DicomError, match="file not found"):
        read_image(tmp_path / "missing.dcm")
    empty = tmp_path / "empty.dcm"
    empty.touch()
    with pytest.raises(DicomError, match="empty file"):
        read_image(empty)
    with pytest.raises(DicomError, match=r"truncated|cannot"):
        read_image(_truncated(tmp_path, "j2k"))

    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm", mammo_like(), "raw"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(DicomError, match="no pixel data"):
        read_image(tmp_path / "nopixels.dcm")

    ds = pydicom.dcmread(write_dicom(tmp_path / "y.dcm", mammo_like(), "raw"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no mammography decoder has it
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(tmp_path / "mpeg.dcm")
    with pytest.raises(DicomError, match=r"1\.2\.840\.10008\.1\.2\.4\.100"):
        read_image(tmp_path / "mpeg.dcm")

    ds = pydicom.dcmread(write_dicom(tmp_path / "z.dcm", mammo_like(), "raw"))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(tmp_path / "palette.dcm")
    with pytest.raises(DicomError, match="PALETTE COLOR"):
        read_image(tmp_path / "palette.dcm")


def _with_syntax(tmp_path: Path, uid: str, name: str) -> Path:
    """A valid mammogram whose pixel data is filed under another (unknown) transfer syntax."""
    ds = pydicom.dcmread(write_dicom(tmp_path / f"{name}_src.dcm", mammo_like(), "raw"))
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = pydicom.encaps.encapsulate([b"\x12\x34" * 500])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / f"{name}.dcm", implicit_vr=False, little_endian=True)
    return tmp_path / f"{name}.dcm"


@pytest.mark.parametrize(
    "uid",
    ["1.2.3.4.5.6.7.8.9", "1.3.6.1.4.1.99999.2.1.1"],  # made up; private (an enterprise-number root)
    ids=["made_up", "private"],
)
def test_unknown_syntax_is_never_decoded(tmp_path, uid):
    """dicomsdl returned uninitialised memory for these: no decoder may turn them into an image."""
    path = _with_syntax(tmp_path, uid, "unknown")
    with pytest.raises(DicomError, match=rf"dicomsdl is not used for transfer syntax \({uid}\)"):
        read_with_dicomsdl(path)
    with pytest.raises(DicomError, match=re.escape(uid)) as caught:
        read_image(path, reduce_to=64, decoders=("pillow-j2k", "dicomsdl", "pydicom"))
    assert "dicomsdl: " in str(caught.value) and "pydicom: " in str(caught.value)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_bits_above_bits_stored_are_masked(tmp_path, photometric):
    """PS3.5 8.1.1: an overlay in bit 12..15 of a 12-bit image is not part of the value (was clipped)."""
    stored = mammo_like(bits=12, seed=3)
    garbage = stored | (np.random.default_rng(0).integers(0, 16, stored.shape, dtype=np.uint16) << 12)
    path = write_dicom(tmp_path / "high.dcm", garbage, "raw", bits=12, photometric=photometric)
    expected = stored if photometric == "MONOCHROME2" else 4095 - stored
    for reader in (read_with_dicomsdl, read_with_pydicom):
        np.testing.assert_array_equal(reader(path).pixels, expected)


def _edited(tmp_path: Path, name: str, **changes) -> Path:
    ds = pydicom.dcmread(write_dicom(tmp_path / f"{name}_src.dcm", mammo_like(), "raw"))
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(tmp_path / f"{name}.dcm")
    return tmp_path / f"{name}.dcm"


def test_what_a_mammogram_cannot_be_is_rejected(tmp_path):
    stored = mammo_like()
    cases = {
        "BitsAllocated=32": _edited(
            tmp_path,
            "b32",
            BitsAllocated=32,
            BitsStored=32,
            HighBit=31,
            Columns=stored.shape[1] // 2,  # same byte count: a 32-bit grid the decoders would cast
        ),
        "signed pixel data": _edited(tmp_path, "signed", PixelRepresentation=1),
        "HighBit=15 with BitsStored=12": _edited(tmp_path, "highbit", HighBit=15),
    }
    for reason, path in cases.items():
        for reader in (read_with_dicomsdl, read_with_pydicom):
            with pytest.raises(DicomError, match=re.escape(reason)):
                reader(path)


@pytest.mark.parametrize(
    ("syntax", "flag", "lossy"),
    [("raw", None, False), ("raw", "01", True), ("j2k", None, False), ("jls", "00", False)],
)
def test_lossy_flag(tmp_path, syntax, flag, lossy):
    path = write_dicom(tmp_path / "x.dcm", mammo_like(), syntax)
    if flag is not None:
        ds = pydicom.dcmread(path)
        ds.LossyImageCompression = flag
        ds.save_as(path)
    for reader in (read_with_dicomsdl, read_with_pydicom):
        assert reader(path).header.lossy is lossy


def test_lossy_jpeg2000_is_flagged(tmp_path):
    """JPEG 2000 (4.91) with an irreversible code: lossy from the syntax, whatever the header omits."""
    ds = pydicom.dcmread(write_dicom(tmp_path / "src.dcm", mammo_like(), "raw"))
    ds.compress(pydicom.uid.JPEG2000, mammo_like(), encoding_plugin="pylibjpeg", j2k_cr=[20])
    if "LossyImageCompression" in ds:
        del ds.LossyImageCompression
    ds.save_as(tmp_path / "lossy.dcm")
    for reader in (read_with_dicomsdl, read_with_pydicom):
        assert reader(tmp_path / "lossy.dcm").header.lossy
