"""Scanner profiles: the detectors, bit depths, photometric interpretations, window tags and transfer
syntaxes the real RSNA data mixes, one named-field row per profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless


@dataclass(frozen=True)
class Machine:
    """A scanner profile; sizes are rows x cols at size_scale 1.0."""

    machine_id: int
    site_id: int
    manufacturer: str
    model: str
    rows: int
    cols: int
    spacing_mm: float
    bits_stored: int
    photometric: str
    voi_function: str | None
    n_windows: int
    transfer_syntax: str
    encoder: str | None
    weight: float
    offset: float  # stored value of brightness 0, as a fraction of the stored range
    gain: float  # stored units per unit brightness, as a fraction of the stored range

    @property
    def max_value(self) -> int:
        return 2**self.bits_stored - 1

    def size(self, scale: float) -> tuple[int, int]:
        """Rows and columns at ``scale``, rounded to even numbers."""
        return _even(self.rows * scale), _even(self.cols * scale)


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


# weight: share of patients; offset: stored value of brightness 0 and gain: stored units per unit
# brightness, both as fractions of the stored range. The first patients take the profiles in this order.
# fmt: off
MACHINES: tuple[Machine, ...] = (
    Machine(
        machine_id=49, site_id=1, manufacturer="HOLOGIC, Inc.", model="Selenia Dimensions",
        rows=3328, cols=2560, spacing_mm=0.07, bits_stored=12,
        photometric="MONOCHROME2", voi_function="LINEAR", n_windows=1,
        transfer_syntax=JPEG2000Lossless, encoder="pylibjpeg",
        weight=0.35, offset=0.02, gain=0.70,
    ),
    Machine(
        machine_id=48, site_id=1, manufacturer="HOLOGIC, Inc.", model="Lorad Selenia",
        rows=4096, cols=3328, spacing_mm=0.065, bits_stored=12,
        photometric="MONOCHROME2", voi_function="LINEAR", n_windows=2,
        transfer_syntax=JPEG2000Lossless, encoder="pylibjpeg",
        weight=0.20, offset=0.03, gain=0.65,
    ),
    Machine(
        machine_id=29, site_id=2, manufacturer="GE MEDICAL SYSTEMS", model="Senographe Essential",
        rows=2294, cols=1914, spacing_mm=0.1, bits_stored=14,
        photometric="MONOCHROME1", voi_function="SIGMOID", n_windows=3,
        transfer_syntax=JPEG2000Lossless, encoder="pylibjpeg",
        weight=0.15, offset=0.05, gain=0.60,
    ),
    Machine(
        machine_id=21, site_id=2, manufacturer="FUJIFILM Corporation", model="FDR MS-3500",
        rows=2776, cols=2082, spacing_mm=0.1, bits_stored=14,
        photometric="MONOCHROME1", voi_function="LINEAR", n_windows=2,
        transfer_syntax=JPEGLSLossless, encoder="pyjpegls",
        weight=0.10, offset=0.03, gain=0.72,
    ),
    Machine(
        machine_id=93, site_id=1, manufacturer="SIEMENS", model="Mammomat Inspiration",
        rows=3518, cols=2800, spacing_mm=0.085, bits_stored=16,
        photometric="MONOCHROME2", voi_function=None, n_windows=0,
        transfer_syntax=RLELossless, encoder="pylibjpeg",
        weight=0.10, offset=0.01, gain=0.55,
    ),
    Machine(
        machine_id=216, site_id=2, manufacturer="Planmed", model="Planmed Clarity",
        rows=2800, cols=2294, spacing_mm=0.083, bits_stored=13,
        photometric="MONOCHROME2", voi_function="SIGMOID", n_windows=1,
        transfer_syntax=ExplicitVRLittleEndian, encoder=None,
        weight=0.10, offset=0.04, gain=0.68,
    ),
)
# fmt: on
MACHINE_BY_ID = {m.machine_id: m for m in MACHINES}
