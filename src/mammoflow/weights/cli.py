"""`mammoflow weights`: the files the configured run needs, fetched into the weights folder (rule weights)."""

from __future__ import annotations

import argparse
import json


def _needs(text: str) -> list:
    from mammoflow.weights.catalog import Needed

    try:
        items = json.loads(text)
        return [Needed(kind=i["kind"], tag=i["tag"], used_by=i.get("used_by", "")) for i in items]
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise argparse.ArgumentTypeError(
            f'--need wants a JSON list of {{"kind", "tag"}} objects ({exc})'
        ) from exc


def cmd_weights(args: argparse.Namespace) -> None:
    from mammoflow.weights.fetch import fetch_all

    manifest = fetch_all(args.folder, args.need)
    print(f"weights: {len(manifest['files'])} files in {args.folder}, listed in its manifest.json")


def register(sub) -> None:
    p = sub.add_parser(
        "weights", help="put every pretrained file the run needs into the weights folder (needs network)"
    )
    p.add_argument("--folder", required=True, help="the weights folder (config weights.folder)")
    p.add_argument("--need", type=_needs, default=[], help="the needed files as a JSON list (rule `weights`)")
    p.set_defaults(func=cmd_weights)
