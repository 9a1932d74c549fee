"""The report's figures as PNG bytes: per-epoch curves (the paper's Figure 4), confusion matrices
(Figure 5) and ROC curves.

Inputs are plain pandas/numpy, so every function can be tested without a results tree. Figures are
built on ``matplotlib.figure.Figure`` directly (never pyplot): no window, no global state, safe inside
a Snakemake job on a headless node. Colours are the Okabe-Ito palette (safe for the common colour-vision
deficiencies); where there are more series than colours, line styles tell them apart.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from sklearn.metrics import roc_auc_score, roc_curve

DPI = 110
WIDTH = 10.5  # inches: about 1150 px at DPI
# Okabe & Ito (2008), black moved last and yellow second to last: yellow is faint on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
LINESTYLES = ["-", "--", ":", "-."]
PANELS = {
    "valid_loss": "Loss (dashed: training)",
    "accuracy": "Accuracy",
    "auc": "AUC",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
}
CLASS_NAMES = ("normal", "cancer")


def _style(i: int) -> dict:
    return {
        "color": PALETTE[i % len(PALETTE)],
        "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)],
    }


def _png(fig: Figure, tight: bool = False) -> bytes:
    buffer = io.BytesIO()
    # No "Software" key: the same figure gives the same bytes whatever the matplotlib build.
    fig.savefig(
        buffer,
        format="png",
        dpi=DPI,
        facecolor="white",
        metadata={"Software": None},
        bbox_inches="tight" if tight else None,
        pad_inches=0.15,
    )
    return buffer.getvalue()


def _message(title: str, message: str) -> bytes:
    """A small figure that says why there is nothing to draw (the report shows it in the figure's place)."""
    fig = Figure(figsize=(WIDTH, 2.0), layout="constrained")
    fig.suptitle(title)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#555555", transform=ax.transAxes)
    return _png(fig)


def _series(frame: pd.DataFrame, column: str) -> pd.Series:
    epochs = pd.to_numeric(frame.get("epoch", pd.Series(range(1, len(frame) + 1))), errors="coerce")
    values = pd.Series(pd.to_numeric(frame[column], errors="coerce").to_numpy(float), index=epochs.to_numpy())
    return values[values.notna()]


def epoch_curves(histories: dict[str, list[pd.DataFrame]], title: str) -> bytes:
    """Per-epoch validation loss (training loss dashed) and metrics, the paper's Figure 4, as PNG bytes.

    ``histories`` maps a data set to its folds' ``history.csv`` frames. Thin lines are single folds, the
    thick line their mean over the folds that have a value at that epoch; every point has a marker, so a
    one-epoch run still shows. A panel without any value (an AUC undefined in every fold) is left out.
    """
    groups = {label: [f for f in frames if len(f)] for label, frames in histories.items()}
    groups = {label: frames for label, frames in groups.items() if frames}
    panels = [c for c in PANELS if any(c in f and _series(f, c).size for fs in groups.values() for f in fs)]
    if not panels:
        return _message(title, "no training history to draw")
    last = max(int(_series(f, c).index.max()) for fs in groups.values() for f in fs for c in panels if c in f
               and _series(f, c).size)  # fmt: skip
    ncols = min(3, len(panels))
    fig = Figure(figsize=(WIDTH, 2.9 * math.ceil(len(panels) / ncols) + 0.9), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(math.ceil(len(panels) / ncols), ncols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, column in zip(axes, panels, strict=False):
        for g, (label, frames) in enumerate(groups.items()):
            for name, dashed in (
                ((column, False), ("train_loss", True)) if column == "valid_loss" else ((column, False),)
            ):
                series = [_series(f, name) for f in frames if name in f]
                series = [s for s in series if s.size]
                # Training loss: dashed, open markers (a single epoch has no line to dash).
                style = {**_style(g), **({"linestyle": "--", "markerfacecolor": "white"} if dashed else {})}
                for s in series if len(series) > 1 else []:
                    ax.plot(s.index, s.to_numpy(), marker="o", markersize=3, linewidth=1, alpha=0.35, **style)
                if series:
                    mean = pd.concat(series, axis=1).mean(axis=1).sort_index()
                    ax.plot(
                        mean.index,
                        mean.to_numpy(),
                        marker="o",
                        markersize=6,
                        linewidth=2.2,
                        label=None if dashed else f"{label} ({len(frames)} folds)",
                        **style,
                    )
        ax.set_title(PANELS[column])
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.set_xticks(range(1, last + 1, max(1, math.ceil(last / 12))))
        ax.set_xlim(0.5, last + 0.5)
        if column != "valid_loss":
            ax.set_ylim(-0.02, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=9, frameon=False
    )
    return _png(fig)


def confusion_matrices(matrices: dict[str, np.ndarray], title: str) -> bytes:
    """One 2×2 confusion matrix ``[[tn, fp], [fn, tp]]`` per data set (the paper's Figure 5) as PNG bytes.

    Cells show the count and the row percentage (share of the actual class) and are shaded by it, so
    panels of different sizes compare; a row without images (no positives) is grey and says so.
    """
    checked = {}
    for label, matrix in matrices.items():
        array = np.asarray(matrix)
        if array.shape != (2, 2) or not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(
                f"confusion matrix {label!r}: expected a 2x2 shape of counts, got {array.tolist()}"
            )
        checked[label] = array
    if not checked:
        return _message(title, "no confusion matrix to draw")
    ncols = 2 if len(checked) == 4 else min(3, len(checked))
    nrows = math.ceil(len(checked) / ncols)
    fig = Figure(figsize=(WIDTH, 3.6 * nrows + 0.7), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(checked) :]:
        ax.set_visible(False)
    from matplotlib import colormaps

    cmap = colormaps["Blues"].with_extremes(bad="#dddddd")
    for ax, (label, counts) in zip(axes, checked.items(), strict=False):
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.full((2, 2), np.nan), where=totals > 0)
        image = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0, vmax=1)
        for r in range(2):
            for c in range(2):
                text = f"{counts[r, c]:,.0f}\n" + (
                    "(no images)" if np.isnan(share[r, c]) else f"{share[r, c]:.1%}"
                )
                colour = "white" if share[r, c] > 0.6 else "#111111"
                ax.text(c, r, text, ha="center", va="center", fontsize=12, color=colour)
        tn, fp, fn, tp = counts.ravel()
        rates = [
            f"{name} {num / den:.0%}"
            for name, num, den in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp))
            if den > 0
        ]
        ax.set_title(
            f"{label}\nn = {counts.sum():,.0f} ({tp + fn:,.0f} cancer)\n{', '.join(rates)}", fontsize=10
        )
        ax.set_xticks([0, 1], CLASS_NAMES)
        ax.set_yticks([0, 1], CLASS_NAMES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
    bar = fig.colorbar(image, ax=list(axes[: len(checked)]), shrink=0.8, format=PercentFormatter(1.0))
    bar.set_label("share of the actual class (row %)")
    return _png(fig)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """ROC curves as PNG bytes: one per key (a model), AUC in the legend, the chance diagonal.

    Each value is ``(y_true, probability)`` pooled over folds. Pairs with a missing probability are
    dropped; a curve with only one class present cannot be drawn and gets a legend note instead.
    """
    # A square ROC on the left, the legend in its own column on the right (five models' entries would
    # hide the curves); fixed geometry, because a square axes and constrained layout fight.
    width, height, side = 9.5, 5.6, 4.4
    fig = Figure(figsize=(width, height))
    fig.suptitle(title, y=1 - 0.15 / height, va="top")
    ax = fig.add_axes((0.75 / width, 0.6 / height, side / width, side / height))
    ax.plot([0, 1], [0, 1], linestyle=":", color="#888888", linewidth=1.2, label="chance (AUC 0.5)")
    for i, (label, (y_true, probability)) in enumerate(curves.items()):
        y, p = np.asarray(y_true, dtype=float).ravel(), np.asarray(probability, dtype=float).ravel()
        if y.shape != p.shape:
            raise ValueError(f"ROC {label!r}: {y.size} labels but {p.size} probabilities")
        keep = np.isfinite(y) & np.isfinite(p)
        y, p = y[keep].astype(int), p[keep]
        if len(np.unique(y)) < 2:
            only = "no images" if y.size == 0 else ("only cancer" if y.sum() else "no cancer")
            ax.plot([], [], " ", label=f"{label}: not drawn, {only} (n = {y.size})")
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(
            fpr,
            tpr,
            linewidth=2,
            **_style(i),
            label=f"{label}: AUC {roc_auc_score(y, p):.3f} (n = {y.size}, {y.sum()} cancer)",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.04, 1.0), borderaxespad=0, fontsize=9, frameon=False)
    return _png(fig, tight=True)  # tight: long legend labels widen the picture instead of being cut off
