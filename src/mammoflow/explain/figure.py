"""Figure 6 of the study, one row per explained image: original | Grad-CAM overlay | box."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from mammoflow.atomic import atomic_path

BOX_COLOUR = "lime"
LESION_COLOUR = "red"


def choose_examples(boxes: pd.DataFrame, examples: int) -> list[int]:
    """Rows of ``boxes`` (sorted by probability, highest first) that Figure 6 shows, as the paper's does:
    predicted positives with their lesion box, the map's maximum and the box around it.

    Where lesion boxes are known, hits and misses alternate (the best-scoring of each first), so the figure
    shows both what the maps find and what they miss; the rest are filled with the other predicted
    positives, then the highest-scoring images, in order of probability.
    """
    if examples <= 0 or boxes.empty:
        return []
    positive = boxes["predicted_positive"].to_numpy(bool)
    scored = boxes["hit"].notna().to_numpy()
    hit = boxes["hit"].fillna(False).to_numpy(bool)
    hits = [int(i) for i in np.flatnonzero(positive & scored & hit)]
    misses = [int(i) for i in np.flatnonzero(positive & scored & ~hit)]
    picked: list[int] = []
    while (hits or misses) and len(picked) < examples:
        for pool in (hits, misses):
            if pool and len(picked) < examples:
                picked.append(pool.pop(0))
    rest = [int(i) for i in np.flatnonzero(positive)] + list(range(len(boxes)))
    for i in rest:
        if len(picked) >= examples:
            break
        if i not in picked:
            picked.append(i)
    return sorted(picked, key=lambda i: (-float(boxes["probability"].iloc[i]), i))


def _row_title(row: pd.Series) -> str:
    parts = [f"image {row['image_id']}", f"p = {row['probability']:.3f}"]
    if row["source"] != "real":
        parts.append(str(row["source"]))
    if row.get("map_constant"):
        parts.append("constant map: no peak")
    hit = row["hit"]
    if hit is not None and hit is not pd.NA and not (isinstance(hit, float) and math.isnan(hit)):
        parts.append(f"{'hit' if hit else 'miss'}, IoU {row['iou']:.2f}")
    else:
        parts.append("no lesion box")
    return "   ".join(parts)


def write_figure(
    path: str | Path,
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    table: pd.DataFrame,
    examples: int,
    title: str,
    alpha: float = 0.45,
) -> None:
    """Up to ``examples`` triptychs of the first rows of ``table`` (sorted by probability, highest first).

    ``images`` and ``maps`` (res x res, [0, 1]; at least the first ``examples`` rows) are row-aligned with
    ``table``, which has the boxes.parquet columns. Axes use the stores' continuous coordinates (extent
    0..res), so boxes draw at their values.
    """
    rows = min(examples, len(table), len(images))
    if rows == 0:
        fig = Figure(figsize=(6, 1.6))
        ax = fig.subplots()
        ax.axis("off")
        why = "no images to explain" if len(table) == 0 else "cam.examples is 0: no triptychs rendered"
        ax.text(0.5, 0.5, f"{title}\n\n{why}", ha="center", va="center", fontsize=10, wrap=True)
        _save(fig, path)
        return
    fig = Figure(figsize=(7.5, 2.75 * rows + 0.6))
    axes = fig.subplots(rows, 3, squeeze=False)
    for r in range(rows):
        row = table.iloc[r]
        res = images[r].shape[-1]
        extent = (0, res, res, 0)
        for ax in axes[r]:
            ax.imshow(images[r], cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 1].imshow(
            maps[r], cmap="jet", alpha=alpha, vmin=0, vmax=1, extent=extent, interpolation="bilinear"
        )
        box_ax = axes[r, 2]
        x0, y0, x1, y1 = (row[c] for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        box_ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=BOX_COLOUR, lw=1.5))
        box_ax.plot(row["peak_x"] + 0.5, row["peak_y"] + 0.5, "+", color=BOX_COLOUR, ms=8, mew=1.5)
        if np.isfinite(row["lesion_x0"]):
            lx0, ly0, lx1, ly1 = (row[c] for c in ("lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1"))
            box_ax.add_patch(
                Rectangle((lx0, ly0), lx1 - lx0, ly1 - ly0, fill=False, ec=LESION_COLOUR, lw=1.2, ls="--")
            )
        for ax in axes[r]:
            ax.set_xlim(0, res)
            ax.set_ylim(res, 0)
        axes[r, 1].set_title(_row_title(row), fontsize=8)
    for ax, name in zip(axes[0], ("original", "CAM (method in the title)", "box"), strict=True):
        ax.set_xlabel(name, fontsize=8)
        ax.xaxis.set_label_position("top")
    handles = [
        Line2D([], [], color=BOX_COLOUR, lw=1.5, label="CAM box (+ peak)"),
        Line2D([], [], color=LESION_COLOUR, lw=1.2, ls="--", label="lesion box"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    _save(fig, path)


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
