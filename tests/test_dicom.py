"""The DICOM reader: dicomsdl and pydicom agree bit for bit, MONOCHROME1 is inverted, bad files say why."""

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
