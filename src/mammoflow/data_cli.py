"""`mammoflow phantom`, `decode`, `index`, `preprocess` and `folds`: the data stages' subcommands, which
workflow/rules/data.smk calls."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammoflow.arguments import COUNT, FRACTION, NON_NEGATIVE, add_limit_arguments, json_object, whole_number


def cmd_phantom(args: argparse.Namespace) -> None:
    from mammoflow.phantom import PhantomSpec, generate

    generate(Path(args.out), PhantomSpec.configured(**args.spec), workers=args.workers)


def cmd_decode(args: argparse.Namespace) -> None:
    from mammoflow.decode import decode_shard
    from mammoflow.limits import DecodeSettings

    settings = DecodeSettings(
        args.working_size,
        tuple(args.decoders),
        args.strict,
        args.reduce,
        args.max_megapixels,
        args.max_memory_mb,
        args.timeout_s,
    )
    decode_shard(
        args.data_dir,
        args.out,
        args.shard,
        args.shards,
        settings,
        args.workers,
        args.sheet or None,
        args.images,
    )


def cmd_index(args: argparse.Namespace) -> None:
    from mammoflow.decoded import index_shards

    index_shards(
        args.shard_dirs,
        args.index,
        args.errors,
        max_failed_fraction=args.max_failed_fraction,
        failure_list=args.failure_list or None,
    )


def cmd_preprocess(args: argparse.Namespace) -> None:
    from mammoflow.preprocess import ProcessOptions
    from mammoflow.store import build_store

    options = ProcessOptions.configured(**args.options)
    lesions = args.lesions if args.lesions else None
    build_store(args.index, args.dataset, args.res, args.out, options, lesions, workers=args.workers)


def cmd_folds(args: argparse.Namespace) -> None:
    import pandas as pd

    from mammoflow.atomic import write_parquet
    from mammoflow.folds import make_folds
    from mammoflow.samplesheet import read_sheet

    if args.sheet:
        images = read_sheet(args.sheet, labels=True)[["image_id", "patient_id", "cancer"]]
    else:
        images = pd.read_parquet(args.index, columns=["image_id", "patient_id", "cancer"])
    required = args.require_positive_training
    folds = make_folds(images, args.k, args.seed, tuple(args.protocols), require_positive_training=required)
    write_parquet(folds, args.out)


def register(sub) -> None:
    from mammoflow.sections import defaults

    shipped = defaults()  # config.yaml: its values are the commands' defaults too
    decode = shipped["decode"]
    p = sub.add_parser("phantom", help="generate the built-in phantom data set in the RSNA layout")
    p.add_argument("--out", required=True, help="folder to write train.csv, train_images/, lesions.csv")
    p.add_argument(
        "--spec",
        type=json_object,
        default={},
        help="phantom settings as a JSON object, laid over config.yaml's",
    )
    p.add_argument("--workers", type=COUNT, default=1)
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("decode", help="decode one shard of the DICOMs to working-size 16-bit images")
    p.add_argument("--data-dir", required=True, help="RSNA-layout folder (train.csv, train_images/)")
    p.add_argument("--out", required=True, help="shard folder")
    p.add_argument("--shard", type=NON_NEGATIVE, required=True)
    p.add_argument("--shards", type=COUNT, required=True)
    p.add_argument(
        "--working-size", type=COUNT, default=decode["working_size"], help="long side of the decoded images"
    )
    p.add_argument("--workers", type=COUNT, default=1, help="decoder processes")
    p.add_argument("--decoders", nargs="+", default=decode["decoders"], choices=["dicomsdl", "pydicom"])
    p.add_argument("--strict", action="store_true", help="fail on the first file that cannot be decoded")
    p.add_argument(
        "--reduce",
        action=argparse.BooleanOptionalAction,
        default=decode["reduce"],
        help="decode JPEG 2000 at the deepest level that keeps the long side >= the working size",
    )
    p.add_argument("--sheet", default="", help="the sample sheet (default: DATA_DIR/train.csv)")
    p.add_argument("--images", default="train_images", help="image folder under DATA_DIR (RSNA layout)")
    add_limit_arguments(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("index", help="join decoded shards into one index and one error list")
    p.add_argument("shard_dirs", nargs="+")
    p.add_argument("--index", required=True)
    p.add_argument("--errors", required=True)
    p.add_argument(
        "--max-failed-fraction",
        type=FRACTION,
        default=decode["max_failed_fraction"],
        help="fail when more than this share of the files could not be decoded (after writing the list)",
    )
    p.add_argument(
        "--failure-list",
        default="",
        help="also write the list of failures here as CSV, a file that stays when the job fails (a log)",
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("preprocess", help="build the packed store of one data set at one resolution")
    p.add_argument("--index", required=True, help="decoded index.parquet")
    p.add_argument("--dataset", required=True, choices=["original", "processed"])
    p.add_argument("--res", type=COUNT, required=True)
    p.add_argument("--out", required=True, help="store folder")
    p.add_argument(
        "--options",
        type=json_object,
        default={},
        help="preprocess settings as a JSON object, laid over config.yaml's",
    )
    p.add_argument("--lesions", default="", help="optional lesion-box sidecar CSV (phantom data)")
    p.add_argument("--workers", type=COUNT, default=1)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("folds", help="assign cross-validation folds for each protocol")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sheet", help="the sample sheet (train.csv): folds before decoding")
    source.add_argument("--index", help="a decoded index.parquet instead")
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=whole_number(2), default=shipped["folds"]["k"])
    p.add_argument("--seed", type=NON_NEGATIVE, default=shipped["folds"]["seed"])
    p.add_argument("--protocols", nargs="+", default=shipped["protocols"], choices=["clean", "paper"])
    p.add_argument(
        "--require-positive-training",
        action="store_true",
        help="fail when a clean fold's training part has no positive patient (its GAN would have none)",
    )
    p.set_defaults(func=cmd_folds)
