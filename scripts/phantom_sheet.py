"""Contact sheet of the phantom for the README: negatives and positives of the demo's and of config.yaml's
phantom, rendered as the detector stores them and windowed for display, lesion boxes in red; "bc": the
breast's benign calcifications.

    python scripts/phantom_sheet.py docs/phantom_sheet.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from mammoflow.phantom import PhantomSpec, build_catalog, render_image

ROOT = Path(__file__).resolve().parents[1]
TILE = (96, 120)  # width, height of one image on the sheet
PER_ROW = 8


def _spec(*files: str) -> PhantomSpec:
    section: dict = {}
    for name in files:
        section.update(yaml.safe_load((ROOT / name).read_text()).get("phantom", {}))
    section.pop("threads", None)
    section["size_scale"] = 0.1  # a contact sheet needs no more
    return PhantomSpec.from_config(section)


def _tile(spec: PhantomSpec, task) -> np.ndarray:
    image = render_image(spec, task)
    m = task.machine
    pixels = image.pixels.astype(np.float32)
    if m.photometric == "MONOCHROME1":
        pixels = m.max_value - pixels
    lo, hi = np.percentile(pixels[image.breast_mask], [0.5, 99.8])
    gray = (np.clip((pixels - lo) / max(hi - lo, 1.0), 0, 1) * 255).astype(np.uint8)
    h, w = gray.shape
    tile = cv2.cvtColor(cv2.resize(gray, TILE, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    sx, sy = TILE[0] / w, TILE[1] / h
    for _, x0, y0, x1, y1 in image.boxes:
        cv2.rectangle(tile, (int(x0 * sx), int(y0 * sy)), (int(x1 * sx), int(y1 * sy)), (0, 0, 255), 1)
    notes = [f"{task.laterality}{task.view}"] + (["implant"] if task.implant else [])
    notes += [f"{len(task.benign)} bc"] if task.benign else []  # benign calcifications
    cv2.putText(tile, " ".join(notes), (2, TILE[1] - 4), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 255, 255), 1)
    return tile


def _rows(spec: PhantomSpec, label: str) -> list[np.ndarray]:
    _, tasks = build_catalog(spec)
    negatives = [t for t in tasks if not t.lesions]
    # Show what matters: implants and benign calcifications among the negatives when the set has them.
    implants = [t for t in negatives if t.implant][:2]
    negatives = implants + [t for t in negatives if t.benign and not t.implant][: PER_ROW - len(implants)]
    positives = [t for t in tasks if t.lesions][:PER_ROW]
    rows = []
    for name, chosen in (("negatives", negatives), ("positives", positives)):
        band = np.zeros((16, TILE[0] * PER_ROW, 3), np.uint8)
        cv2.putText(band, f"{label}: {name}", (4, 12), cv2.FONT_HERSHEY_PLAIN, 0.9, (255, 255, 255), 1)
        rows += [band, np.concatenate([_tile(spec, t) for t in chosen], axis=1)]
    return rows


def main(out: str) -> None:
    demo = _spec("config.yaml", "presets/demo.yaml")
    paper = _spec("config.yaml")
    sheet = np.concatenate(
        _rows(demo, "presets/demo.yaml (large, dense masses)")
        + _rows(paper, "config.yaml (screening-hard: masses a few % brighter)"),
        axis=0,
    )
    cv2.imwrite(out, sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/phantom_sheet.png")
