"""Makes the HTJ2K fixture (tests/data/htj2k_lossless.dcm): pydicom cannot encode HTJ2K, imagecodecs
(OpenJPH) can. Needs imagecodecs, which the project does not depend on; run from the repository root:

    pip install --target /tmp/ic imagecodecs
    PYTHONPATH=/tmp/ic:tests python tests/data/make_htj2k.py
"""

from pathlib import Path

import imagecodecs
from dicom_factory import mammo_textured, write_codestream_dicom

stored = mammo_textured(448, 360, bits=16, seed=5)
codestream = imagecodecs.htj2k_encode(stored, resolutions=6, reversible=True)  # 5 levels, lossless
write_codestream_dicom(
    Path("tests/data/htj2k_lossless.dcm"),
    stored,
    codestream,
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    bits=16,
    windows=[(30000, 50000)],
)
