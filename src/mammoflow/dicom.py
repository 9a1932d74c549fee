"""Reading mammography DICOMs: dicomsdl first (fast), pydicom as fallback and as the test reference.

Both return *stored values* (no rescale, no VOI LUT applied): windowing belongs to preprocessing, which
needs the raw values and the header's window. MONOCHROME1 images are inverted here (``max - x`` with
``max = 2**BitsStored - 1``) so that everything downstream sees "bright = dense"; the flag ``inverted`` lets
preprocessing undo it exactly when it applies the header's window, which is defined on the stored values.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Decoding plugin that pydicom should use per transfer syntax. Its default choice for JPEG-LS is the
# pylibjpeg plugin, about 4x slower than pyjpegls on mammograms.
_PYDICOM_PLUGIN = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}

TRANSFER_SYNTAX_NAMES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1 (process 14)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}


class DicomError(Exception):
    """A file that cannot be turned into an image; the message is the reason, for errors.parquet."""


@dataclass
class Header:
    """What preprocessing needs from the header. Window values are in stored-value units of the file."""

    rows: int
    cols: int
    bits_stored: int
    photometric: str
    transfer_syntax: str
    window_centers: list[float] = field(default_factory=list)
    window_widths: list[float] = field(default_factory=list)
    voi_lut_function: str = "LINEAR"
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    pixel_spacing_mm: float = math.nan

    @property
    def max_stored(self) -> int:
        return (1 << self.bits_stored) - 1


@dataclass
class DecodedImage:
    pixels: np.ndarray  # uint16, bright = dense
    header: Header
    inverted: bool
    decoder: str
    seconds: float


def _as_float_list(value) -> list[float]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        parts = value.replace("\\", " ").split()
        return [float(p) for p in parts]
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        return [float(v) for v in value]
    return [float(value)]


def _first_float(value, default: float) -> float:
    values = _as_float_list(value)
    return values[0] if values else default


def _header_from(get, transfer_syntax: str) -> Header:
    """Build a Header from a getter (keyword -> value or None) shared by both decoders."""
    samples = get("SamplesPerPixel")
    if samples not in (None, 1):
        raise DicomError(f"not a grayscale image (SamplesPerPixel={samples})")
    frames = get("NumberOfFrames")
    if frames not in (None, "", 1, "1"):
        raise DicomError(f"multi-frame image (NumberOfFrames={frames}) is not a 2-D mammogram")
    if get("PixelRepresentation") in (1, True):
        raise DicomError("signed pixel data (PixelRepresentation=1) is not supported for mammograms")
    rows, cols, bits = get("Rows"), get("Columns"), get("BitsStored")
    if not rows or not cols or not bits:
        raise DicomError(f"incomplete image header (Rows={rows}, Columns={cols}, BitsStored={bits})")
    centers, widths = _as_float_list(get("WindowCenter")), _as_float_list(get("WindowWidth"))
    n = min(len(centers), len(widths))
    spacing = get("PixelSpacing") or get("ImagerPixelSpacing")
    return Header(
        rows=int(rows),
        cols=int(cols),
        bits_stored=int(bits),
        photometric=str(get("PhotometricInterpretation") or "MONOCHROME2").strip(),
        transfer_syntax=transfer_syntax,
        window_centers=centers[:n],
        window_widths=widths[:n],
        voi_lut_function=str(get("VOILUTFunction") or "LINEAR").strip().upper(),
        rescale_slope=_first_float(get("RescaleSlope"), 1.0),
        rescale_intercept=_first_float(get("RescaleIntercept"), 0.0),
        pixel_spacing_mm=_first_float(spacing, math.nan),
    )


def _finish(pixels: np.ndarray, header: Header, decoder: str, started: float) -> DecodedImage:
    if pixels.ndim != 2 or pixels.shape != (header.rows, header.cols):
        raise DicomError(
            f"decoded pixel array has shape {pixels.shape}, header says {(header.rows, header.cols)}"
        )
    pixels = pixels.astype(np.uint16, copy=False)
    # Values above BitsStored would wrap when inverted; real files sometimes carry garbage high bits.
    if header.bits_stored < 16:
        pixels = np.minimum(pixels, header.max_stored, out=pixels if pixels.flags.writeable else None)
    inverted = header.photometric == "MONOCHROME1"
    if inverted:
        pixels = (header.max_stored - pixels).astype(np.uint16)
    elif header.photometric != "MONOCHROME2":
        raise DicomError(f"unsupported PhotometricInterpretation {header.photometric!r}")
    return DecodedImage(pixels, header, inverted, decoder, time.perf_counter() - started)


def read_with_dicomsdl(path: str | Path) -> DecodedImage:
    import dicomsdl

    started = time.perf_counter()
    try:
        dcm = dicomsdl.open(str(path))
    except Exception as exc:  # dicomsdl raises RuntimeError subclasses with its own text
        raise DicomError(f"dicomsdl cannot open the file: {_one_line(exc)}") from exc
    transfer_syntax = str(dcm.TransferSyntaxUID or "")
    # dicomsdl answers a missing element with an element of VR NONE rather than None.
    if dcm.getDataElement("PixelData").vr() == dicomsdl.VR.NONE:
        raise DicomError("no pixel data (PixelData element missing)")
    header = _header_from(lambda key: getattr(dcm, key), transfer_syntax)
    try:
        pixels = dcm.pixelData(storedvalue=True)
    except Exception as exc:
        raise DicomError(f"dicomsdl cannot decode {_syntax_name(transfer_syntax)}: {_one_line(exc)}") from exc
    if pixels is None:
        raise DicomError("dicomsdl returned no pixel data")
    return _finish(np.asarray(pixels), header, "dicomsdl", started)


def read_with_pydicom(path: str | Path) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    started = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(str(path))
    except InvalidDicomError as exc:
        raise DicomError(f"not a DICOM file: {_one_line(exc)}") from exc
    except Exception as exc:
        raise DicomError(f"pydicom cannot read the file: {_one_line(exc)}") from exc
    transfer_syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    ended_early = [str(w.message) for w in caught if "End of file reached" in str(w.message)]
    if ended_early:
        raise DicomError(f"file is truncated ({_one_line(ended_early[0])})")
    if "PixelData" not in ds:
        raise DicomError("no pixel data (PixelData element missing)")
    header = _header_from(lambda key: ds.get(key), transfer_syntax)
    plugin = _PYDICOM_PLUGIN.get(transfer_syntax, "")
    try:
        pixels = ds.pixel_array if not plugin else _pydicom_array_with(ds, plugin)
    except Exception as exc:
        if "less than expected" in str(exc):
            raise DicomError(
                f"pixel data shorter than the header says (truncated file): {_one_line(exc)}"
            ) from exc
        raise DicomError(f"pydicom cannot decode {_syntax_name(transfer_syntax)}: {_one_line(exc)}") from exc
    return _finish(np.asarray(pixels), header, "pydicom", started)


def _pydicom_array_with(ds, plugin: str) -> np.ndarray:
    try:
        ds.pixel_array_options(decoding_plugin=plugin)
        return ds.pixel_array
    except Exception:
        # The preferred plugin is an optimisation, not a requirement: fall back to pydicom's choice.
        ds.pixel_array_options(decoding_plugin="")
        return ds.pixel_array


def read_image(path: str | Path, decoders: tuple[str, ...] = ("dicomsdl", "pydicom")) -> DecodedImage:
    """Decode with the first decoder that succeeds. Raises DicomError naming every decoder's reason."""
    path = Path(path)
    if not path.is_file():
        raise DicomError("file not found")
    if path.stat().st_size == 0:
        raise DicomError("empty file")
    readers = {"dicomsdl": read_with_dicomsdl, "pydicom": read_with_pydicom}
    reasons = []
    for name in decoders:
        try:
            return readers[name](path)
        except DicomError as exc:
            reasons.append(f"{name}: {exc}")
        except Exception as exc:  # a decoder bug must not kill a whole shard: record it
            reasons.append(f"{name}: unexpected {type(exc).__name__}: {_one_line(exc)}")
    raise DicomError("; ".join(reasons))


def _syntax_name(uid: str) -> str:
    return f"{TRANSFER_SYNTAX_NAMES.get(uid, 'transfer syntax')} ({uid or 'unknown'})"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
