"""`mammoflow predict`: apply a run's trained models (or given artifacts) to a folder of new mammograms."""

from __future__ import annotations

import argparse

from mammoflow.arguments import COUNT, NON_NEGATIVE, add_limit_arguments


def cmd_predict(args: argparse.Namespace) -> None:
    from mammoflow.limits import DecodeLimits
    from mammoflow.predict.run import PredictOptions, run_predict

    options = PredictOptions(
        results=args.results,
        artifacts=args.artifacts,
        protocol=args.protocol,
        resolution=args.resolution,
        dataset=args.dataset,
        models=args.models,
        aggregation=args.aggregation,
        submission=args.submission,
        name=args.name,
        workers=args.workers,
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        seed=args.seed,
        cam_max=args.cam_max,
        working_size=args.working_size,
        decode_limits=DecodeLimits(args.max_megapixels, args.max_memory_mb, args.timeout_s),
    )
    run_predict(args.data, args.out, options)


def cmd_test_layout(args: argparse.Namespace) -> None:
    from mammoflow.predict.inputs import write_test_layout

    written = write_test_layout(args.data, args.out)
    print(f"{args.out}: test.csv ({len(written)} images, no labels) and test_images/")


def register(sub) -> None:
    from mammoflow.sections import defaults

    shipped = defaults("predict")  # config.yaml's predict: choices are the command's defaults too
    p = sub.add_parser(
        "test-layout", help="copy an RSNA training folder as Kaggle's test layout (test.csv without labels)"
    )
    p.add_argument("--data", required=True, help="folder with train.csv and train_images/")
    p.add_argument("--out", required=True, help="folder to write test.csv and test_images/ to")
    p.set_defaults(func=cmd_test_layout)

    p = sub.add_parser(
        "predict",
        help="predict new mammograms with the trained models: per image, per breast, a Kaggle submission",
        description="Decode and preprocess a folder as the chosen models' training images were, average "
        "each model's folds (and several models), aggregate per breast, threshold at the out-of-fold "
        "pF1-optimal and 90%%-specificity points; external metrics when the folder has labels.",
    )
    p.add_argument(
        "--data", required=True, help="RSNA-layout folder (train.csv or test.csv) or a folder of DICOMs"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--results", default="results", help="the run's results folder (default: results)")
    p.add_argument(
        "--artifacts",
        nargs="+",
        default=[],
        help="model artifacts (cell folders or model.json) instead of the run's cells",
    )
    p.add_argument(
        "--protocol",
        choices=["clean", "paper"],
        default=shipped["protocol"],
        help="default: clean when trained",
    )
    p.add_argument(
        "--resolution", type=COUNT, default=shipped["resolution"], help="default: the highest trained"
    )
    p.add_argument(
        "--dataset",
        choices=["original", "processed", "augmented"],
        default=shipped["dataset"],
        help="default: processed",
    )
    p.add_argument("--models", nargs="+", default=shipped["models"],
                   help="names to average, 'all', or 'best' (default: the best out-of-fold AUC)")  # fmt: skip
    p.add_argument(
        "--aggregation", choices=["mean", "max"], default=shipped["aggregation"], help="over a breast's views"
    )
    p.add_argument("--submission", choices=["probability", "binary"], default=shipped["submission"],
                   help="submission values: probabilities, or 0/1 at the pF1-optimal threshold")  # fmt: skip
    p.add_argument("--name", default=None, help="name of this prediction (default: the output folder's name)")
    p.add_argument("--workers", type=COUNT, default=1, help="decoder processes")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--threads", type=NON_NEGATIVE, default=0, help="CPU threads for torch (0: torch's default)"
    )
    p.add_argument(
        "--batch-size", type=COUNT, default=shipped["batch_size"], help="images per forward pass of a model"
    )
    p.add_argument(
        "--bootstrap",
        type=NON_NEGATIVE,
        default=shipped["bootstrap"],
        help="patient resamples for the external intervals",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the bootstrap resamples")
    p.add_argument(
        "--cam-max",
        type=NON_NEGATIVE,
        default=shipped["cam_max"],
        help="Grad-CAM panels for at most this many flagged breasts",
    )
    p.add_argument("--working-size", type=COUNT, default=None,
                   help="decode size, only for artifacts that do not record it")  # fmt: skip
    add_limit_arguments(p)  # the decode stage's bounds on one file: size, memory, time
    p.set_defaults(func=cmd_predict)
