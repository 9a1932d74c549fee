"""What one file may cost to decode: its declared size, checked before any decoder allocates, and the
memory and time of the decoder process that reads it (``mammoflow.isolated`` enforces those two).

A DICOM's pixel data is described twice: by the header (Rows x Columns) and, in a compressed file, by the
codestream's own header (JPEG 2000 SIZ, JPEG SOF), and a decoder allocates by the second. A 38 KB file can
declare 60000 x 60000 in both: dicomsdl or OpenJPEG then asks for 6.7 GiB at once, or, at 20000 x 20000,
gets its 2.4 GB (measured) and returns an "image". So before any decoder runs, both declarations are
read (the header without its pixel data, and the first bytes of the first fragment) and the file is
refused, with its reason, when either is over ``decode.max_megapixels`` or when they disagree.

Default 100 megapixels: the largest mammograms are well under half of it. Full-field detectors write at
most 24 x 30 cm at 50 um (4800 x 6000 = 28.8 MP; Hologic 3328 x 4096 = 13.6 MP; the largest RSNA scanner
size in this project's tests, 5355 x 4915 = 26.3 MP), computed-radiography plates at 43.75 um about
5486 x 6857 = 37.6 MP. 20000 x 20000 (400 MP, 800 MB as 16-bit, more inside a decoder) is refused.

The decoder process gets ``decode.max_memory_mb`` of memory (data) above what it holds when it starts
(default 2048: a 100-megapixel lossless JPEG 2000 peaks at 0.84 GB in dicomsdl, 0.93 GB in pydicom,
measured; the decode job asks its scheduler for 1000 MB + this per decoder process) and
``decode.timeout_s`` seconds per file and decoder (default 300: a real-size mammogram takes 0.5-5 s, the
100-megapixel file 147 s on two cores shared by a dozen processes). Either exceeded is that file's
failure, recorded with its reason like any bad file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from mammoflow.sections import FromSection, defaults

# Imported by every command line (mammoflow.arguments): OpenCV and pydicom are imported where used. The
# values are config.yaml's (decode:), their one home.
_SHIPPED = defaults("decode")
DEFAULT_MAX_MEGAPIXELS = float(_SHIPPED["max_megapixels"])
DEFAULT_MAX_MEMORY_MB = int(_SHIPPED["max_memory_mb"])
DEFAULT_TIMEOUT_S = float(_SHIPPED["timeout_s"])
DEFAULT_MAX_PIXELS = int(DEFAULT_MAX_MEGAPIXELS * 1_000_000)

JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    }
)
PREFIX_BYTES = 1 << 16  # of the first fragment: the codestream's main header is far shorter
MAX_TILES = 65535  # ISO 15444-1 A.4.2: a tile index (Isot) is below 65535


@dataclass(frozen=True)
class DecodeLimits(FromSection):
    """The bounds on one file's decoding (config ``decode``: max_megapixels, max_memory_mb, timeout_s).

    ``max_memory_mb`` or ``timeout_s`` of 0 (or None) turns that bound off."""

    SECTION = "decode"

    max_megapixels: float
    max_memory_mb: int | None
    timeout_s: float | None

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


DEFAULT_LIMITS = DecodeLimits(DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_MEMORY_MB, DEFAULT_TIMEOUT_S)


@dataclass(frozen=True)
class DecodeSettings(FromSection):
    """How one decode job decodes its files (config ``decode``, less the DAG's ``shards`` and the failure
    share the index step checks): the working size, the decoder chain, strictness, reduced JPEG 2000
    decoding and the bounds on one file."""

    SECTION = "decode"

    working_size: int
    decoders: tuple[str, ...]
    strict: bool
    reduce: bool
    max_megapixels: float
    max_memory_mb: int | None
    timeout_s: float | None

    @classmethod
    def _converted(cls, values: dict) -> dict:
        return {**values, "decoders": tuple(values["decoders"])}

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_megapixels, self.max_memory_mb, self.timeout_s)


def over_limit(rows: int, cols: int, max_pixels: int, what: str, components: int = 1) -> str | None:
    """The reason a declared size is refused, or None when it is within ``max_pixels``."""
    samples = rows * cols * max(components, 1)
    if samples <= max_pixels:
        return None
    planes = f" x {components} components" if components > 1 else ""
    return (
        f"{what} declares {rows} x {cols} pixels{planes} ({samples / 1e6:.1f} megapixels), more than "
        f"decode.max_megapixels = {max_pixels / 1e6:g}: refused before decoding"
    )


def declared_size_problem(path: str | Path, max_pixels: int) -> str | None:
    """Why ``path`` must not reach a decoder (its sizes), or None. Reads no more than the header and the
    first 64 KB of pixel data. A file whose header pydicom cannot read gets None: the decoders then say
    what is wrong with it, and check Rows x Columns themselves (``dicom._header_from``)."""
    import pydicom

    from mammoflow import j2k

    try:
        with open(path, "rb") as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True, defer_size="64 KB")
            rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
            prefix = _first_fragment(handle) if syntax in j2k.J2K_SYNTAXES | JPEG_SYNTAXES else None
    except Exception:
        return None
    problem = over_limit(rows, cols, max_pixels, "the header (Rows x Columns)")
    if problem or prefix is None:
        return problem
    if syntax in j2k.J2K_SYNTAXES:
        return _j2k_problem(prefix, rows, cols, max_pixels)
    return _jpeg_problem(prefix, rows, cols, max_pixels)


def _j2k_problem(prefix: bytes, rows: int, cols: int, max_pixels: int) -> str | None:
    from mammoflow import j2k

    try:
        siz = j2k.read_siz(prefix)
    except j2k.CodestreamError as exc:
        return f"JPEG 2000 codestream: {exc}: refused before decoding"
    problem = over_limit(siz.height, siz.width, max_pixels, "the JPEG 2000 codestream (SIZ)", siz.components)
    if problem:
        return problem
    if siz.tiles > MAX_TILES:
        return f"the JPEG 2000 codestream (SIZ) declares {siz.tiles} tiles, the standard allows {MAX_TILES}"
    if (siz.height, siz.width) != (rows, cols):
        return _disagree("JPEG 2000 codestream (SIZ)", siz.height, siz.width, rows, cols)
    return None


def _jpeg_problem(prefix: bytes, rows: int, cols: int, max_pixels: int) -> str | None:
    frame = jpeg_frame_size(prefix)
    if frame is None:
        return None  # no frame header in the first bytes: the decoder finds what is wrong
    height, width, components = frame
    problem = over_limit(height, width, max_pixels, "the JPEG codestream (SOF)", components)
    if problem:
        return problem
    # Height 0 is legal in a SOF: the number of lines then comes in a DNL marker after the first scan.
    if height and (height, width) != (rows, cols):
        return _disagree("JPEG codestream (SOF)", height, width, rows, cols)
    return None


def _disagree(what: str, rows: int, cols: int, header_rows: int, header_cols: int) -> str:
    return (
        f"the {what} declares {rows} x {cols} pixels but the header's Rows x Columns is "
        f"{header_rows} x {header_cols}: refused before decoding"
    )


def _first_fragment(handle) -> bytes | None:
    """The first bytes of the first fragment of encapsulated Pixel Data, read from where pydicom stopped
    (``stop_before_pixels`` leaves the file at the Pixel Data tag); None for native pixel data."""
    head = handle.read(12)
    if head[:4] != b"\xe0\x7f\x10\x00":
        return None
    explicit = head[4:6] in (b"OB", b"OW")
    length = struct.unpack_from("<I", head, 8 if explicit else 4)[0]
    if length != 0xFFFFFFFF:
        return None  # defined length: native (uncompressed) pixel data
    handle.seek(handle.tell() - 12 + (12 if explicit else 8))
    for item in range(2):  # the Basic Offset Table, then the first fragment (PS3.5 A.4)
        tag, size = struct.unpack("<4sI", handle.read(8))
        if tag != b"\xfe\xff\x00\xe0":
            return None
        if item == 0:
            handle.seek(size, 1)
    return handle.read(min(size, PREFIX_BYTES))


# JPEG frame headers (ITU T.81 B.1.1.3: SOF0..SOF15 but DHT, JPG and DAC; T.87: SOF55 of JPEG-LS).
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})


def jpeg_frame_size(data: bytes) -> tuple[int, int, int] | None:
    """(lines, samples per line, components) of the first frame header, or None when there is none."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            if pos + 10 > len(data):
                return None
            _, lines, samples, components = struct.unpack_from(">BHHB", data, pos + 4)
            return lines, samples, components
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None
