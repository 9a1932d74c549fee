"""Bounded decoding (issue 25, item 2): a file's declared size (DICOM Rows x Columns, and the codestream's
own JPEG 2000 SIZ or JPEG SOF) is checked before any decoder allocates; decoder processes get a memory and
a per-file time limit; what exceeds them is recorded with its reason, in decode and in predict's decoding.

The hostile files are real: a small image encoded as JPEG 2000 by OpenJPEG (Pillow), its SIZ patched to
declare a huge image, in a DICOM whose header may say the same or something else. Before: a 36 KB file
declaring 20000 x 20000 decoded (dicomsdl, 2.4 GB peak) into an "image", one declaring 60000 x 60000 made
dicomsdl and pydicom each try to allocate 6.7 GiB.
"""

import io
import os
import struct
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import REPO
from dicom_factory import mammo_like, mammo_textured, write_codestream_dicom, write_dicom
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless

from mammoflow.decode import decode_shard, image_path
from mammoflow.dicom import DicomError, read_image
from mammoflow.isolated import ChildLimits, TimedOut, imap_isolated
from mammoflow.limits import DecodeLimits, DecodeSettings, declared_size_problem, jpeg_frame_size


def _codestream(stored: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(stored.astype(np.uint16)).save(out, format="JPEG2000", num_resolutions=6, no_jp2=True)
    return out.getvalue()


def _patch_siz(codestream: bytes, rows: int, cols: int) -> bytes:
    """Xsiz/Ysiz and the tile size XTsiz/YTsiz of the SIZ segment (right after SOC) set to cols x rows."""
    data = bytearray(codestream)
    assert data[2:4] == b"\xff\x51"
    struct.pack_into(">II", data, 8, cols, rows)
    struct.pack_into(">II", data, 24, cols, rows)
    return bytes(data)


def hostile(path, rows: int, cols: int, siz: tuple[int, int] | None = None, side: int = 180):
    """A real codestream of a side x side image declaring ``siz`` (default rows x cols), in a DICOM whose
    header says Rows x Columns = rows x cols."""
    stored = mammo_textured(side, side, 12, seed=1)
    codestream = _patch_siz(_codestream(stored), *(siz or (rows, cols)))
    write_codestream_dicom(path, stored, codestream, str(JPEG2000Lossless), bits=12)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, cols
    ds.save_as(path, enforce_file_format=True)
    return path


def _sheet(root, ids):
    frame = pd.DataFrame({"patient_id": 1, "image_id": ids, "laterality": "L", "view": "CC", "cancer": 0})
    frame.to_csv(root / "train.csv", index=False)


PEAK = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(child.stderr.read().decode()); child.stderr.close()
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_declared_sizes_are_refused_before_decoding_fast_and_small(tmp_path):
    root = tmp_path / "rsna"
    for n in (20000, 60000):
        hostile(image_path(root, 1, n), n, n)
    write_dicom(image_path(root, 1, 7), mammo_like(300, 240), "j2k")
    _sheet(root, [7, 20000, 60000])
    assert (image_path(root, 1, 60000)).stat().st_size < 40_000  # the 38 KB file
    for n in (20000, 60000):
        started = time.perf_counter()
        with pytest.raises(DicomError, match=rf"declares {n} x {n} pixels .*refused before decoding"):
            read_image(image_path(root, 1, n))
        assert time.perf_counter() - started < 1.0
    # The whole decode stage on them, as its own process: peak memory of it and its decoder process.
    command = [sys.executable, "-m", "mammoflow", "decode", "--data-dir", str(root),
               "--out", str(tmp_path / "s"), "--shard", "0", "--shards", "1", "--workers", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # Measured from a small parent: a child started with vfork records its parent's peak RSS at exec, so
    # measured from this (large) test process it would read the test's own peak (900 MB under xdist).
    done = subprocess.run([sys.executable, "-c", PEAK, *command], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.split()[-1]) / 1024  # kB on Linux; the largest of the process and its children
    print(f"\ndecode of 3 files, 2 refused: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 200
    errors = pd.read_parquet(tmp_path / "s/errors.parquet").set_index("image_id")["reason"]
    assert "the header (Rows x Columns) declares 20000 x 20000 pixels (400.0 megapixels)" in errors[20000]
    assert "decode.max_megapixels = 100" in errors[60000]
    assert len(pd.read_parquet(tmp_path / "s/meta.parquet")) == 1


def test_codestream_size_disagreeing_with_the_header_is_refused_with_both(tmp_path):
    disagree = hostile(tmp_path / "a.dcm", 180, 180, siz=(400, 360))
    with pytest.raises(DicomError) as caught:
        read_image(disagree)
    assert str(caught.value) == (
        "the JPEG 2000 codestream (SIZ) declares 400 x 360 pixels but the header's Rows x Columns is "
        "180 x 180: refused before decoding"
    )
    # A small header over a huge codestream: OpenJPEG allocates by the codestream.
    huge = hostile(tmp_path / "b.dcm", 180, 180, siz=(60000, 60000))
    assert "the JPEG 2000 codestream (SIZ) declares 60000 x 60000" in declared_size_problem(huge, 100_000_000)
    # An honest file passes, and a limit below its size refuses it.
    honest = write_dicom(tmp_path / "c.dcm", mammo_like(300, 240), "j2k")
    assert declared_size_problem(honest, 100_000_000) is None
    assert "300 x 240" in declared_size_problem(honest, 50_000)
    assert read_image(honest).pixels.shape == (300, 240)


def test_jpeg_frame_header_is_read_too(tmp_path):
    """JPEG-LS (and JPEG lossless, process 14) declare their size in a SOF marker."""
    path = write_dicom(tmp_path / "ls.dcm", mammo_like(300, 240), "jls")
    ds = pydicom.dcmread(path)
    fragment = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert jpeg_frame_size(fragment) == (300, 240, 1)
    sof = fragment.index(b"\xff\xf7")  # SOF55: length, precision, lines, samples per line
    patched = bytearray(fragment)
    struct.pack_into(">HH", patched, sof + 5, 30000, 30000)
    ds.PixelData = encapsulate([bytes(patched)])
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match=r"the JPEG codestream \(SOF\) declares 30000 x 30000 pixels"):
        read_image(path)


def test_decoders_run_out_of_their_memory_limit_by_name(tmp_path):
    """With the size check opened up, the decoder processes' memory limit is what stops a 20000 x 20000
    decode (800 MB of pixels): each decoder's failure is recorded, naming the limit."""
    root = tmp_path / "rsna"
    hostile(image_path(root, 1, 20000), 20000, 20000)
    _sheet(root, [20000])
    limits = DecodeLimits(max_megapixels=1000, max_memory_mb=400, timeout_s=60)
    assert decode_shard(
        root, tmp_path / "s", 0, 1, settings=DecodeSettings.configured(reduce=False, **asdict(limits))
    ) == (0, 1)
    reason = pd.read_parquet(tmp_path / "s/errors.parquet")["reason"][0]
    assert reason.startswith("dicomsdl: ") and "; pydicom: " in reason
    assert (
        reason.count("(a decoder process may use 400 MiB more than at its start: decode.max_memory_mb)") == 2
    )


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_decoder_that_takes_too_long_is_stopped():
    started = time.perf_counter()
    results = dict(imap_isolated(_sleep, [0.0, 30.0, 0.0], workers=2, limits=ChildLimits(timeout_s=1.0)))
    assert time.perf_counter() - started < 10
    assert results[0] == results[2] == 0.0 and isinstance(results[1], TimedOut)
    assert str(results[1]) == "decoder process stopped after 1 s on this file (decode.timeout_s)"


def test_decode_records_a_timeout_for_each_decoder(tmp_path):
    root = tmp_path / "rsna"
    write_dicom(image_path(root, 1, 5), mammo_textured(2000, 1600, 12), "j2k")
    _sheet(root, [5])
    limits = DecodeLimits.configured(timeout_s=0.01)
    assert decode_shard(root, tmp_path / "s", 0, 1, settings=DecodeSettings.configured(**asdict(limits))) == (
        0,
        1,
    )
    reason = pd.read_parquet(tmp_path / "s/errors.parquet")["reason"][0]
    assert reason.count("stopped after 0.01 s on this file (decode.timeout_s)") == 3  # each decoder in turn
    assert reason.startswith("pillow-j2k: ")


def test_predict_decoding_records_the_refusal(tmp_path):
    from mammoflow.predict.prepare import Preparation, prepare_images

    path = hostile(tmp_path / "big.dcm", 60000, 60000)
    good = write_dicom(tmp_path / "good.dcm", mammo_like(300, 240), "j2k")
    images = pd.DataFrame({"path": [str(path), str(good)], "laterality": "L", "header_error": ""})
    arrays, status = prepare_images(images, [Preparation("original", 32)], tmp_path, 256, ("dicomsdl",))
    assert list(status["decoded"]) == [False, True]
    assert (
        "declares 60000 x 60000 pixels" in status["reason"][0]
        and "refused before decoding" in status["reason"][0]
    )
    assert arrays[Preparation("original", 32)].shape == (2, 32, 32)
