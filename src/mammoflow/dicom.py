"""Reading mammography DICOMs: dicomsdl first (fast), pydicom as fallback and as the test reference.

Both return *stored values* (no rescale, no LUT applied): windowing belongs to preprocessing, which needs
the raw values and the header's window or LUTs (carried in ``Header``). Bits above BitsStored are masked
off (PS3.5 8.1.1: they are not part of the value; overlays and garbage live there), as pydicom does.
MONOCHROME1 images are then inverted (``max - x`` with ``max = 2**BitsStored - 1``) so that everything
downstream sees "bright = dense"; the flag ``inverted`` lets preprocessing undo it exactly when it applies
the header's window, which is defined on the stored values.

Only what a mammogram can be gets through: one grey sample, unsigned, 8 or 16 bits allocated, one frame.
Anything else (32-bit dose grids, 1-bit masks, signed CT, colour) is rejected with the reason, not cast.
A decoder is only given the transfer syntaxes it really supports: dicomsdl returns uninitialised memory
for a syntax it does not know, so unknown and private syntaxes never reach it.

With ``reduce_to`` set, JPEG 2000 files are first read at a reduced wavelet level (mammoflow.j2k); any
file that path cannot take goes on to the full decoders unchanged.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammoflow import j2k, limits
from mammoflow.isolated import memory_budget_mb
from mammoflow.syntaxes import DICOMSDL_SYNTAXES, LOSSY_CAPABLE_SYNTAXES, PYDICOM_PLUGIN, syntax_name


class DicomError(Exception):
    """A file that cannot be turned into an image; the message is the reason, for errors.parquet."""


class NotForThisDecoder(DicomError):
    """The reduced JPEG 2000 path does not apply to this file: the next decoder takes it, no error."""


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
    bits_allocated: int = 16
    lossy: bool = False
    # VOI LUT Sequence (one table per item, PS3.3 C.11.2) and Modality LUT Sequence (C.11.1): the LUT
    # Descriptor [entries, first stored value mapped, bits per entry] and the table. Empty when absent.
    voi_lut_descriptors: list[list[int]] = field(default_factory=list)
    voi_luts: list[list[int]] = field(default_factory=list)
    modality_lut_descriptor: list[int] = field(default_factory=list)
    modality_lut: list[int] = field(default_factory=list)

    @property
    def max_stored(self) -> int:
        return (1 << self.bits_stored) - 1


@dataclass
class DecodedImage:
    pixels: np.ndarray  # uint16, bright = dense; (rows, cols) / 2**level, rounded up
    header: Header
    inverted: bool
    decoder: str
    seconds: float
    level: int = 0  # JPEG 2000 resolution level decoded: 0 = full size, 1 = half, 2 = quarter ...


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


def _is_lossy(transfer_syntax: str, lossy_image_compression) -> bool:
    flag = str(lossy_image_compression or "").strip()
    return flag == "01" or (transfer_syntax in LOSSY_CAPABLE_SYNTAXES and flag != "00")


def _header_from(get, transfer_syntax: str, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> Header:
    """Build a Header from a getter (keyword -> value or None) shared by both decoders; refuses a declared
    size over ``max_pixels`` before the decoder allocates anything."""
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
    too_large = limits.over_limit(int(rows), int(cols), max_pixels, "the header (Rows x Columns)")
    if too_large:
        raise DicomError(too_large)
    allocated = int(get("BitsAllocated") or 0)
    if allocated not in (8, 16):
        raise DicomError(f"BitsAllocated={allocated}: a mammogram has 8 or 16 bits per pixel")
    if not 1 <= int(bits) <= allocated:
        raise DicomError(f"BitsStored={bits} does not fit BitsAllocated={allocated}")
    high_bit = get("HighBit")
    if high_bit not in (None, "") and int(high_bit) != int(bits) - 1:
        raise DicomError(f"HighBit={high_bit} with BitsStored={bits}: only HighBit = BitsStored - 1 is read")
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
        bits_allocated=allocated,
        lossy=_is_lossy(transfer_syntax, get("LossyImageCompression")),
    )


def _lut_of(item, where: str, little_endian: bool) -> tuple[list[int], list[int]]:
    """Descriptor and table of one LUT item, read as pydicom's apply_*_lut read them."""
    from pydicom.valuerep import VR

    if "LUTDescriptor" not in item or "LUTData" not in item:
        raise DicomError(f"{where} item without LUTDescriptor or LUTData")
    descriptor = [int(v) for v in item.LUTDescriptor]
    entries = descriptor[0] or 1 << 16
    if not 8 <= descriptor[2] <= 16:
        raise DicomError(f"{where}: {descriptor[2]} bits per LUT entry (8..16 allowed)")
    element = item["LUTData"]
    if element.VR == VR.OW or isinstance(element.value, bytes):
        table = np.frombuffer(element.value, "<u2" if little_endian else ">u2").tolist()
    else:
        table = [int(v) for v in (element.value if isinstance(element.value, list) else [element.value])]
    if len(table) < entries:
        raise DicomError(f"{where}: LUTData has {len(table)} entries, LUTDescriptor says {entries}")
    return descriptor, table[:entries]


def _add_luts(header: Header, ds) -> Header:
    """Copy VOI LUT Sequence and Modality LUT Sequence from a pydicom dataset into the header."""
    little = ds.original_encoding[1] is not False
    for i, item in enumerate(ds.get("VOILUTSequence") or []):
        descriptor, table = _lut_of(item, f"VOI LUT Sequence item {i}", little)
        header.voi_lut_descriptors.append(descriptor)
        header.voi_luts.append(table)
    modality = ds.get("ModalityLUTSequence") or []
    if modality:
        header.modality_lut_descriptor, header.modality_lut = _lut_of(
            modality[0], "Modality LUT Sequence", little
        )
    return header


def _finish(pixels: np.ndarray, header: Header, decoder: str, started: float, level: int = 0) -> DecodedImage:
    shape = (j2k.reduced_size(header.rows, level), j2k.reduced_size(header.cols, level))
    if pixels.ndim != 2 or pixels.shape != shape:
        raise DicomError(f"decoded pixel array has shape {pixels.shape}, header says {shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise DicomError(f"decoder returned {pixels.dtype} pixels for an unsigned image")
    pixels = pixels.astype(np.uint16, copy=not pixels.flags.writeable)
    # PS3.5 8.1.1: only BitsStored bits are the value; the ones above may hold overlays or garbage.
    if header.bits_stored < 16:
        np.bitwise_and(pixels, header.max_stored, out=pixels)
    inverted = header.photometric == "MONOCHROME1"
    if inverted:
        np.subtract(header.max_stored, pixels, out=pixels)
    elif header.photometric != "MONOCHROME2":
        raise DicomError(f"unsupported PhotometricInterpretation {header.photometric!r}")
    return DecodedImage(pixels, header, inverted, decoder, time.perf_counter() - started, level)


def read_with_dicomsdl(path: str | Path, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> DecodedImage:
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
    if transfer_syntax not in DICOMSDL_SYNTAXES:
        raise DicomError(f"dicomsdl is not used for {syntax_name(transfer_syntax)}")
    header = _header_from(lambda key: getattr(dcm, key), transfer_syntax, max_pixels)
    if any(dcm.getDataElement(k).vr() != dicomsdl.VR.NONE for k in ("VOILUTSequence", "ModalityLUTSequence")):
        import pydicom

        _add_luts(header, pydicom.dcmread(str(path), stop_before_pixels=True))
    try:
        pixels = dcm.pixelData(storedvalue=True)
    except Exception as exc:
        raise DicomError(f"dicomsdl cannot decode {syntax_name(transfer_syntax)}: {_one_line(exc)}") from exc
    if pixels is None:
        raise DicomError("dicomsdl returned no pixel data")
    return _finish(np.asarray(pixels), header, "dicomsdl", started)


def _read_dataset(path: str | Path, **options):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(str(path), **options)
    except InvalidDicomError as exc:
        raise DicomError(f"not a DICOM file: {_one_line(exc)}") from exc
    except Exception as exc:
        raise DicomError(f"pydicom cannot read the file: {_one_line(exc)}") from exc
    ended_early = [str(w.message) for w in caught if "End of file reached" in str(w.message)]
    if ended_early:
        raise DicomError(f"file is truncated ({_one_line(ended_early[0])})")
    if "PixelData" not in ds:
        raise DicomError("no pixel data (PixelData element missing)")
    transfer_syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    return ds, transfer_syntax


def read_with_pydicom(path: str | Path, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> DecodedImage:
    started = time.perf_counter()
    ds, transfer_syntax = _read_dataset(path)
    header = _add_luts(_header_from(lambda key: ds.get(key), transfer_syntax, max_pixels), ds)
    plugin = PYDICOM_PLUGIN.get(transfer_syntax, "")
    try:
        pixels = ds.pixel_array if not plugin else _pydicom_array_with(ds, plugin)
    except Exception as exc:
        if "less than expected" in str(exc):
            raise DicomError(
                f"pixel data shorter than the header says (truncated file): {_one_line(exc)}"
            ) from exc
        raise DicomError(f"pydicom cannot decode {syntax_name(transfer_syntax)}: {_one_line(exc)}") from exc
    return _finish(np.asarray(pixels), header, "pydicom", started)


def _pydicom_array_with(ds, plugin: str) -> np.ndarray:
    try:
        ds.pixel_array_options(decoding_plugin=plugin)
        return ds.pixel_array
    except Exception:
        # The preferred plugin is an optimisation, not a requirement: fall back to pydicom's choice.
        ds.pixel_array_options(decoding_plugin="")
        return ds.pixel_array


def read_j2k_reduced(
    path: str | Path, reduce_to: int, max_pixels: int = limits.DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """JPEG 2000 at the deepest level whose long side is >= reduce_to (mammoflow.j2k), with Pillow.

    Raises NotForThisDecoder when the file is not one the reduced path can read exactly (another syntax,
    no level to skip, codestream facts that disagree with the header); the full decoders then take it.
    """
    from pydicom.encaps import generate_frames

    started = time.perf_counter()
    # Large elements stay on disk until read: a file of another syntax costs only its header here.
    ds, transfer_syntax = _read_dataset(path, defer_size="64 KB")
    if transfer_syntax not in j2k.J2K_SYNTAXES:
        raise NotForThisDecoder(f"{syntax_name(transfer_syntax)} is not JPEG 2000")
    header = _add_luts(_header_from(lambda key: ds.get(key), transfer_syntax, max_pixels), ds)
    try:
        codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
        facts = j2k.read_main_header(codestream)
    except Exception as exc:
        raise NotForThisDecoder(f"codestream not readable here: {_one_line(exc)}") from exc
    if (facts.width, facts.height) != (header.cols, header.rows) or facts.components != 1 or facts.signed:
        raise NotForThisDecoder(f"codestream {facts} disagrees with the header")
    level = j2k.choose_level(header.rows, header.cols, facts.levels, reduce_to)
    if level == 0:
        raise NotForThisDecoder("no resolution level to skip")
    try:
        pixels = j2k.decode_reduced(codestream, level, facts.precision)
    except Exception as exc:
        raise DicomError(f"reduced JPEG 2000 decode failed: {_one_line(exc)}") from exc
    # Bits above BitsStored cannot be masked off an average. OpenJPEG clamps its output to the codestream
    # precision, so only a codestream wider than BitsStored can show them: it is read in full instead.
    if facts.precision > header.bits_stored and int(pixels.max()) > header.max_stored:
        raise NotForThisDecoder("values above BitsStored: decoded in full, where they can be masked")
    pixels = j2k.match_box_average(pixels, level, (1 << facts.precision) - 1, facts.reversible)
    image = _finish(pixels, header, "pillow-j2k", started, level)
    j2k.clamp_dark_ringing(image.pixels)  # after MONOCHROME1 inversion: dark is the background
    return image


def read_image(
    path: str | Path,
    decoders: tuple[str, ...] = ("dicomsdl", "pydicom"),
    reduce_to: int | None = None,
    max_pixels: int = limits.DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode with the first decoder that succeeds. Raises DicomError naming every decoder's reason.

    Decoder "pillow-j2k" (with ``reduce_to``) reads JPEG 2000 at the deepest level whose long side is
    >= reduce_to and passes every other file on silently; put it first in ``decoders``. A file whose header
    or codestream declares more than ``max_pixels``, or two sizes that disagree, reaches no decoder.
    """
    path = Path(path)
    if not path.is_file():
        raise DicomError("file not found")
    if path.stat().st_size == 0:
        raise DicomError("empty file")
    refused = limits.declared_size_problem(path, max_pixels)
    if refused:
        raise DicomError(refused)
    readers = {
        "dicomsdl": lambda p: read_with_dicomsdl(p, max_pixels),
        "pydicom": lambda p: read_with_pydicom(p, max_pixels),
    }
    if reduce_to is not None:
        readers["pillow-j2k"] = lambda p: read_j2k_reduced(p, reduce_to, max_pixels)
    unknown = [name for name in decoders if name not in readers]
    if unknown:
        raise ValueError(f"unknown decoder(s) {unknown} (pillow-j2k needs reduce_to)")
    reasons = []
    for name in decoders:
        try:
            return readers[name](path)
        except NotForThisDecoder:
            continue
        except DicomError as exc:
            reasons.append(f"{name}: {exc}{_memory_note(exc.__cause__)}")
        except MemoryError as exc:
            reasons.append(f"{name}: ran out of memory{_memory_note(exc)}")
        except Exception as exc:  # a decoder bug must not kill a whole shard: record it
            reasons.append(f"{name}: unexpected {type(exc).__name__}: {_one_line(exc)}")
    raise DicomError("; ".join(reasons))


def _memory_note(exc: BaseException | None) -> str:
    """For a decoder that could not allocate: the bound it ran into, when it ran under one."""
    budget = memory_budget_mb()
    if not isinstance(exc, MemoryError) or not budget:
        return ""
    return f" (a decoder process may use {budget} MiB more than at its start: decode.max_memory_mb)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
