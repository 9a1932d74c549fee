#!/usr/bin/env bash
# Makes the JPEG lossless process 14 fixtures (pydicom cannot encode this syntax; dcmtk can).
# Needs Debian's dcmtk. Run from the repository root: bash tests/data/make_jpeg_lossless.sh
set -euo pipefail
tmp=$(mktemp -d)
PYTHONPATH=tests .venv/bin/python - "$tmp" <<'PY'
import sys
from pathlib import Path
from dicom_factory import mammo_like, write_dicom
out = Path(sys.argv[1])
write_dicom(out / "sv1.dcm", mammo_like(96, 80, bits=14, seed=1), bits=14, photometric="MONOCHROME1",
            windows=[(8000, 12000)], voi="SIGMOID")
write_dicom(out / "sv6.dcm", mammo_like(90, 72, bits=12, seed=2), bits=12, windows=[(2000, 3000)])
PY
dcmcjpeg +e1 "$tmp/sv1.dcm" tests/data/jpeg_lossless_sv1_mono1.dcm   # 1.2.840.10008.1.2.4.70
dcmcjpeg +el +sv 6 "$tmp/sv6.dcm" tests/data/jpeg_lossless_sv6.dcm # 1.2.840.10008.1.2.4.57
# The raw originals, to check decoders against the values that were encoded.
cp "$tmp/sv1.dcm" tests/data/jpeg_lossless_sv1_mono1.source.dcm
cp "$tmp/sv6.dcm" tests/data/jpeg_lossless_sv6.source.dcm
rm -r "$tmp"
