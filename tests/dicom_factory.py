"""Small DICOM files for unit tests: any array, photometric, window and transfer syntax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

SYNTAXES = {
    "raw": (ExplicitVRLittleEndian, None),
    "j2k": (JPEG2000Lossless, "pylibjpeg"),
    "jls": (JPEGLSLossless, "pyjpegls"),
    "rle": (RLELossless, "pylibjpeg"),
}


def mammo_like(rows: int = 200, cols: int = 160, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A bright half-disc (breast) at the left edge on a dark background, with noise: stored values."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    inside = ((yy - rows / 2) / (0.42 * rows)) ** 2 + (xx / (0.6 * cols)) ** 2 < 1
    top = (1 << bits) - 1
    image = np.where(inside, 0.55 * top, 0.03 * top) + rng.normal(0, 0.01 * top, (rows, cols))
    return np.clip(image, 0, top).astype(np.uint16)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    syntax: str = "raw",
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    windows: list[tuple[float, float]] | None = None,
    voi: str | None = "LINEAR",
    spacing: float = 0.1,
) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = photometric
    ds.PixelSpacing = [spacing, spacing]
    if windows:
        ds.WindowCenter = [c for c, _ in windows] if len(windows) > 1 else windows[0][0]
        ds.WindowWidth = [w for _, w in windows] if len(windows) > 1 else windows[0][1]
    if voi:
        ds.VOILUTFunction = voi
    ds.PixelData = stored.astype("<u2").tobytes()
    uid, plugin = SYNTAXES[syntax]
    if uid != ExplicitVRLittleEndian:
        ds.compress(uid, stored, encoding_plugin=plugin)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def mammo_textured(rows: int, cols: int, bits: int = 12, seed: int = 0) -> np.ndarray:
    """mammo_like at a real detector size with tissue-like structure at every scale (for codec tests)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = mammo_like(rows, cols, bits, seed).astype(np.float32)
    top = (1 << bits) - 1
    inside = base > 0.3 * top
    texture = np.zeros((rows, cols), np.float32)
    for cells, amplitude in ((8, 0.08), (40, 0.05), (200, 0.03)):  # lobes, ducts, fine parenchyma
        small = rng.normal(0, 1, (cells, max(1, cells * cols // rows))).astype(np.float32)
        texture += amplitude * cv2.resize(small, (cols, rows), interpolation=cv2.INTER_CUBIC)
    image = base + inside * texture * top
    return np.clip(image, 0, top).astype(np.uint16)


def write_codestream_dicom(path: Path, stored: np.ndarray, codestream: bytes, uid: str, **header) -> Path:
    """A DICOM whose pixel data is the given JPEG 2000 codestream (for encoders pydicom does not drive)."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    write_dicom(path, stored, "raw", **header)
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path
