"""Whether every finished cell started from the weights the configuration asks for (the banner over Table 2).

The configuration says, per model, pretrained or not (``train.pretrained`` with ``model_settings``) and
which timm weights (``weights.timm``). Each cell's metrics.json says what it loaded (``pretrained``: tag,
file, SHA-256). Cells of an earlier mammoflow record only a label (``weights``: "random" after a failed
download, with a ``weights_notice``), and a cell trained before the configuration changed may name other
weights: either way its row is not what the configuration describes, and the report says so in red.
"""

from __future__ import annotations

import json
from pathlib import Path

from mammoflow import paths
from mammoflow.weights.catalog import model_pretrained, timm_tag


def _started_from(summary: dict) -> tuple[bool, str]:
    """(pretrained, timm tag) of a cell's metrics.json, in either generation's format."""
    record = summary.get("pretrained")
    if isinstance(record, dict):
        return bool(record.get("pretrained")), str(record.get("tag") or "")
    label = str(summary.get("weights") or "random")
    return label != "random" and not summary.get("weights_notice"), ""


def weight_mismatches(results: str | Path, config: dict, cells: list[tuple]) -> dict:
    """{"cells": how many finished cells started from other weights than configured, "examples": up to
    five one-line descriptions}; ``cells`` are (protocol, resolution, data set, model, fold) keys."""
    examples, count = [], 0
    for key in cells:
        path = Path(paths.cell_dir(*key, root=results)) / "metrics.json"
        if not path.is_file():
            continue
        model = key[3]
        wanted = (model_pretrained(config, model), timm_tag(config, model) or "")
        got = _started_from(json.loads(path.read_text()))
        # Pretrained weights without a recorded tag (an old cell's "timm hub") were timm's default of the
        # day, not necessarily the configured ones: not a match either.
        if got[0] == wanted[0] and (not wanted[0] or got[1] == wanted[1]):
            continue
        count += 1
        if len(examples) < 5:
            examples.append(
                f"{'/'.join(map(str, key[:4]))} fold {key[4]}: started from "
                f"{got[1] or ('ImageNet weights' if got[0] else 'random initialisation')}, configured: "
                f"{wanted[1] if wanted[0] else 'random initialisation (pretrained: false)'}"
            )
    return {"cells": count, "examples": examples}
