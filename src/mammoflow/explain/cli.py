"""`mammoflow cam`: Grad-CAM explanations of one trained cell (src/mammoflow/explain/, docs/cam.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammoflow.arguments import NON_NEGATIVE, json_object


def cmd_cam(args: argparse.Namespace) -> None:
    from mammoflow.explain.stage import CamJob, CamSettings, run_cam

    job = CamJob(
        Path(args.cell),
        Path(args.store),
        Path(args.out),
        synthetic_dir=Path(args.synthetic) if args.synthetic else None,
        protocol=args.protocol,
        dataset=args.dataset,
        fold=args.fold,
    )
    run_cam(job, CamSettings.configured(**args.settings), device=args.device, threads=args.threads)


def register(sub) -> None:
    p = sub.add_parser("cam", help="Grad-CAM maps, boxes and Figure 6 for one trained cell")
    p.add_argument("--cell", required=True, help="training cell folder (model artifact, predictions.parquet)")
    p.add_argument("--store", required=True, help="the real image store the cell was trained on")
    p.add_argument("--synthetic", default="", help="synthetic store (augmented data set, paper protocol)")
    p.add_argument(
        "--settings",
        type=json_object,
        default={},
        help="cam settings as a JSON object, laid over config.yaml's",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--protocol", default=None, help="for the summary (default: read off the cell path)")
    p.add_argument("--dataset", default=None, help="for the summary (default: read off the cell path)")
    p.add_argument(
        "--fold", type=NON_NEGATIVE, default=None, help="for the summary (default: read off the cell path)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--threads", type=NON_NEGATIVE, default=0, help="CPU threads for torch (0: torch's default)"
    )
    p.set_defaults(func=cmd_cam)
