"""`mammoflow train`: one cell of the training matrix."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammoflow.arguments import NON_NEGATIVE, finite_number, json_object


def cmd_train(args: argparse.Namespace) -> None:
    from mammoflow.classify.train import Cell, TrainSettings, run_cell

    cell = Cell(
        store=Path(args.store),
        folds=Path(args.folds),
        model=args.model,
        fold=args.fold,
        protocol=args.protocol,
        out=Path(args.out),
        synthetic=Path(args.synthetic) if args.synthetic else None,
        decode=args.decode or None,
        weights_file=Path(args.weights) if args.weights else None,
        weights_tag=args.weights_tag,
    )
    settings = TrainSettings.configured(**args.settings)
    run_cell(cell, settings, args.device, args.threads, args.checkpoint_minutes)


def register(sub) -> None:
    from mammoflow.sections import defaults

    p = sub.add_parser("train", help="train and validate one cell (model x data set x resolution x fold)")
    p.add_argument("--store", required=True, help="image store folder (images.npy + manifest.parquet)")
    p.add_argument("--synthetic", default="", help="synthetic store to add (the augmented data set)")
    p.add_argument("--folds", required=True, help="folds.parquet")
    p.add_argument("--model", required=True, help="timm model name")
    p.add_argument("--fold", type=NON_NEGATIVE, required=True, help="validation fold")
    p.add_argument("--protocol", choices=["clean", "paper"], default="clean")
    p.add_argument(
        "--settings",
        type=json_object,
        default={},
        help="train settings as a JSON object, laid over config.yaml's",
    )
    p.add_argument("--out", required=True, help="cell folder")
    p.add_argument(
        "--decode", type=json_object, default={}, help="decode settings of the store (for the model artifact)"
    )
    p.add_argument(
        "--weights", default="", help="pretrained backbone file in timm's format (when settings.pretrained)"
    )
    p.add_argument(
        "--weights-tag", default="", help="its timm <name>.<tag> (the pretrained config to load with)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--threads", type=NON_NEGATIVE, default=0, help="CPU threads for torch (0: torch's default)"
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=finite_number(0.0),
        default=defaults("train")["checkpoint_minutes"],
        help="a checkpoint after an epoch once this many minutes have passed since the last (0: every epoch)",
    )
    p.set_defaults(func=cmd_train)
