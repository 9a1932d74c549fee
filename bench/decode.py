"""Decode + preprocess throughput against bare dicomsdl decoding and a plain pydicom-per-image conversion.

All run in one process on the same files, one decoder process, OpenCV on one thread; pin the whole run to
one core with ``taskset -c 0``. Each file is read from the page cache (one warm-up pass):

- bare dicomsdl: ``dicomsdl.open(path).pixelData(storedvalue=True)`` and nothing else: the decoder's limit;
- mammoflow reduce:false and reduce:true: the decode stage (``decode_shard``: supervised decoder process,
  working-size resize, packed shard) followed by the preprocess stage for every (resolution, data set);
- plain pydicom: ``dcmread`` + ``pixel_array`` (pydicom's default plugin choice) + ``apply_voi_lut`` +
  MONOCHROME1 inversion + resize + PNG per image per resolution, as a typical notebook converts the data;
- per transfer syntax and size: seconds per image of bare dicomsdl and of both decode paths (decode and
  working-size resize, from meta.parquet), and, where dcmtk's ``dcmcjpeg`` is installed, the same images
  as JPEG lossless process 14 (SV1) through dicomsdl and pydicom (pylibjpeg-libjpeg).

Usage:
    taskset -c 0 python bench/decode.py                 # phantom at real detector sizes, 6 patients
    taskset -c 0 python bench/decode.py --patients 3    # the three JPEG 2000 scanners only
    taskset -c 0 python bench/decode.py --data-dir /data/rsna --limit 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def bare_dicomsdl(paths: list[Path]) -> float:
    import dicomsdl

    started = time.perf_counter()
    for path in paths:
        dicomsdl.open(str(path)).pixelData(storedvalue=True)
    return time.perf_counter() - started


def plain_pydicom(paths: list[Path], resolutions: list[int], out: Path) -> float:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in paths:
        ds = pydicom.dcmread(path)
        image = apply_voi_lut(ds.pixel_array, ds).astype(np.float32)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            image = image.max() - image
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6) * 255
        for res in resolutions:
            small = cv2.resize(image, (res, res), interpolation=cv2.INTER_AREA).astype(np.uint8)
            cv2.imwrite(str(out / f"{path.stem}_{res}.png"), small)
    return time.perf_counter() - started


def mammoflow_pipeline(
    data_dir: Path,
    work: Path,
    resolutions: list[int],
    datasets: list[str],
    working_size: int,
    lesions,
    reduce,
) -> tuple[dict[str, float], pd.DataFrame]:
    from mammoflow.decode import decode_shard, index_shards
    from mammoflow.limits import DecodeSettings
    from mammoflow.store import build_store

    timings = {}
    started = time.perf_counter()
    decode_shard(
        data_dir,
        work / "shard000",
        0,
        1,
        settings=DecodeSettings.configured(working_size=working_size, reduce=reduce),
        workers=1,
    )
    index = index_shards([work / "shard000"], work / "index.parquet", work / "errors.parquet")
    timings["decode"] = time.perf_counter() - started
    for res in resolutions:
        for dataset in datasets:
            started = time.perf_counter()
            build_store(work / "index.parquet", dataset, res, work / f"{res}_{dataset}", lesions_csv=lesions)
            timings[f"preprocess {dataset} {res}"] = time.perf_counter() - started
    return timings, index


def per_syntax(paths: list[Path], full: pd.DataFrame, reduced: pd.DataFrame) -> pd.DataFrame:
    """Seconds per image by transfer syntax and size: bare dicomsdl, and both mammoflow decode paths."""
    import dicomsdl

    from mammoflow.syntaxes import TRANSFER_SYNTAX_NAMES

    bare = {}
    for path in paths:
        started = time.perf_counter()
        dicomsdl.open(str(path)).pixelData(storedvalue=True)
        bare[str(path)] = time.perf_counter() - started
    rows = []
    for f, r in zip(full.itertuples(), reduced.set_index("path").loc[full["path"]].itertuples(), strict=True):
        rows.append(
            {
                "transfer syntax": TRANSFER_SYNTAX_NAMES.get(f.transfer_syntax, f.transfer_syntax),
                "size": f"{f.rows}x{f.cols}",
                "level": r.level,
                "bare dicomsdl s": bare[f.path],
                "reduce:false s": f.decode_seconds + f.resize_seconds,
                "reduce:true s": r.decode_seconds + r.resize_seconds,
            }
        )
    table = pd.DataFrame(rows).groupby(["transfer syntax", "size", "level"]).agg(["mean"]).round(3)
    table.columns = [c for c, _ in table.columns]
    table["n"] = pd.DataFrame(rows).groupby(["transfer syntax", "size", "level"]).size()
    table["bare / reduce:true"] = (table["bare dicomsdl s"] / table["reduce:true s"]).round(1)
    return table


def store_agreement(work: Path, resolutions: list[int], datasets: list[str]) -> pd.DataFrame:
    """Per image, mean and 99th percentile of |reduce:true - reduce:false| in each store (grey levels)."""
    from mammoflow.store import open_store
    from mammoflow.syntaxes import TRANSFER_SYNTAX_NAMES

    index = pd.read_parquet(work / "work_True" / "index.parquet")
    rows = []
    for res in resolutions:
        for dataset in datasets:
            full, manifest = open_store(work / "work_False" / f"{res}_{dataset}")
            reduced, manifest_r = open_store(work / "work_True" / f"{res}_{dataset}")
            assert manifest["image_id"].tolist() == manifest_r["image_id"].tolist()
            for row, image_id in enumerate(manifest["image_id"]):
                diff = np.abs(full[row].astype(np.int16) - reduced[row])
                entry = index[index["image_id"] == image_id].iloc[0]
                rows.append(
                    {
                        "transfer syntax": TRANSFER_SYNTAX_NAMES.get(
                            entry.transfer_syntax, entry.transfer_syntax
                        ),
                        "size": f"{entry.rows}x{entry.cols}",
                        "level": entry.level,
                        "store": f"{dataset} {res}",
                        "mean": diff.mean(),
                        "p99": np.percentile(diff, 99),
                    }
                )
    table = pd.DataFrame(rows)
    return (
        table.groupby(["transfer syntax", "size", "level", "store"])
        .agg(mean_min=("mean", "min"), mean_max=("mean", "max"), p99_max=("p99", "max"), n=("mean", "size"))
        .round(2)
    )


def jpeg_lossless(paths: list[Path], work: Path, limit: int = 6) -> pd.DataFrame | None:
    """The images re-encoded as JPEG lossless SV1 (process 14, RSNA's other syntax) by dcmtk's dcmcjpeg:
    seconds per image with dicomsdl and with pydicom's decoders (pylibjpeg-libjpeg, then Pillow's)."""
    import pydicom

    from mammoflow.dicom import read_with_dicomsdl, read_with_pydicom

    if shutil.which("dcmcjpeg") is None:
        print("dcmcjpeg (dcmtk) not installed: no JPEG lossless figures")
        return None
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(paths[:limit]):
        ds = pydicom.dcmread(path)
        ds.decompress()  # dcmcjpeg reads uncompressed data only
        raw, jpeg = work / f"{i}.raw.dcm", work / f"{i}.jpll.dcm"
        ds.save_as(raw, enforce_file_format=True)
        subprocess.run(["dcmcjpeg", "+e1", str(raw), str(jpeg)], check=True)
        for reader in (read_with_dicomsdl, read_with_pydicom):
            reader(jpeg)  # warm
        fast, reference = read_with_dicomsdl(jpeg), read_with_pydicom(jpeg)
        assert np.array_equal(fast.pixels, reference.pixels)
        rows.append(
            {"size": f"{ds.Rows}x{ds.Columns}", "dicomsdl s": fast.seconds, "pydicom s": reference.seconds}
        )
    return pd.DataFrame(rows).groupby("size").agg(["mean", "count"]).round(3)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="RSNA-layout folder; default: a phantom made here")
    parser.add_argument("--patients", type=int, default=6, help="phantom patients (6: every scanner)")
    parser.add_argument("--size-scale", type=float, default=1.0, help="phantom detector size (1.0 = real)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images of train.csv")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--datasets", nargs="+", default=["original", "processed"])
    parser.add_argument("--working-size", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cv2.setNumThreads(1)  # one core for everyone: the comparison is per core
    with tempfile.TemporaryDirectory(prefix="mammoflow-bench-") as tmp:
        tmp = Path(tmp)
        data_dir, lesions = args.data_dir, None
        if data_dir is None:
            from mammoflow.phantom import PhantomSpec, generate

            data_dir = tmp / "phantom"
            spec = PhantomSpec.configured(patients=args.patients, size_scale=args.size_scale, prevalence=0.34)
            print(
                f"generating {args.patients * 4} phantom images at size_scale {args.size_scale} ...",
                flush=True,
            )
            generate(data_dir, spec, workers=1, progress=False)
            lesions = data_dir / "lesions.csv"
        if args.limit:
            table = pd.read_csv(data_dir / "train.csv").head(args.limit)
            limited = tmp / "limited"
            (limited / "train_images").mkdir(parents=True)
            (limited / "train_images").rmdir()
            (limited / "train_images").symlink_to((data_dir / "train_images").resolve())
            table.to_csv(limited / "train.csv", index=False)
            data_dir = limited
        table = pd.read_csv(data_dir / "train.csv")
        paths = [
            data_dir / "train_images" / str(p) / f"{i}.dcm"
            for p, i in zip(table.patient_id, table.image_id, strict=True)
        ]
        n = len(paths)
        bare_dicomsdl(paths)  # warm the page cache
        bare = bare_dicomsdl(paths)
        runs = {}
        for reduce in (False, True):
            runs[reduce] = mammoflow_pipeline(
                data_dir,
                tmp / f"work_{reduce}",
                args.resolutions,
                args.datasets,
                args.working_size,
                lesions,
                reduce,
            )
        plain = plain_pydicom(paths, args.resolutions, tmp / "png")
        syntax_table = per_syntax(paths, runs[False][1], runs[True][1])
        agreement = store_agreement(tmp, args.resolutions, args.datasets)
        jpeg_table = jpeg_lossless(paths, tmp / "jpeg_lossless")

    figures = {
        "images": n,
        "resolutions": args.resolutions,
        "datasets": args.datasets,
        "bare_dicomsdl_img_per_s": n / bare,
        "plain_pydicom_img_per_s": n / plain,
    }
    print(f"\n{n} images, one core; preprocess: {len(args.resolutions)} res x {len(args.datasets)} sets")
    print(f"  bare dicomsdl decode                     {n / bare:7.2f} img/s")
    for reduce, (timings, _) in runs.items():
        ours, decode = sum(timings.values()), timings["decode"]
        name = f"reduce:{str(reduce).lower()}"
        figures[name] = {
            "decode_img_per_s": n / decode,
            "decode_preprocess_img_per_s": n / ours,
            "decode_vs_bare": bare / decode,
            "decode_preprocess_vs_bare": bare / ours,
            "stage_seconds": timings,
        }
        print(f"  mammoflow {name:11s} decode stage     {n / decode:7.2f} img/s  ({bare / decode:.2f}x bare)")
        print(f"  mammoflow {name:11s} decode + prep.   {n / ours:7.2f} img/s  ({bare / ours:.2f}x bare)")
        for stage, seconds in timings.items():
            print(f"      {stage:26s} {seconds:7.2f} s")
    print(f"  plain pydicom per image                  {n / plain:7.2f} img/s")
    print("\nseconds per image by transfer syntax and size (decode + working-size resize):")
    print(syntax_table.to_string())
    print("\nreduce:true vs reduce:false stores, |difference| per image in grey levels:")
    print(agreement.to_string())
    if jpeg_table is not None:
        print("\nJPEG lossless process 14 (SV1, dcmcjpeg +e1), seconds per image:")
        print(jpeg_table.to_string())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
