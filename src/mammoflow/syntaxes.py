"""The DICOM transfer syntaxes mammoflow knows: their names, and which decoder is given which."""

from __future__ import annotations

# Decoding plugin that pydicom should use per transfer syntax. Its default choice for JPEG-LS is the
# pylibjpeg plugin, about 4x slower than pyjpegls on mammograms.
PYDICOM_PLUGIN = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}

TRANSFER_SYNTAX_NAMES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (process 2 & 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1 (process 14)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K Lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}

# The syntaxes dicomsdl is given: those it decodes bit for bit like pydicom on pydicom's own test corpus
# and on this project's files (tests/test_dicom_corpus.py). Lossy JPEG (4.50/4.51) is left to pydicom:
# the two IDCTs differ by a grey level here and there, and one image must not depend on the decoder.
DICOMSDL_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    }
)

# Syntaxes that may hold a lossy image. An image in one of them is lossy unless its header says
# LossyImageCompression "00" (a reversible code in a lossy-capable syntax); in any syntax "01" is lossy.
LOSSY_CAPABLE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.203",
    }
)


def syntax_name(uid: str) -> str:
    return f"{TRANSFER_SYNTAX_NAMES.get(uid, 'transfer syntax')} ({uid or 'unknown'})"
