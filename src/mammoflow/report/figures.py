"""The report's figures as PNG bytes: per-epoch curves (the paper's Figure 4), confusion matrices
(Figure 5), ROC curves, and a contact sheet of PNGs.

Inputs are plain pandas/numpy, so every function can be tested without a results tree. Figures are
built on ``matplotlib.figure.Figure`` directly (never pyplot): no window, no global state, safe inside
a Snakemake job on a headless node. Colours are the Okabe-Ito palette (safe for the common colour-vision
deficiencies); where there are more series than colours, line styles tell them apart.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

DPI = 110
WIDTH = 10.5  # inches: about 1150 px at DPI

# Okabe & Ito (2008), black moved last and yellow second to last: yellow is faint on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
LINESTYLES = ["-", "--", ":", "-."]

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "auc": "AUC",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "pf1": "Probabilistic F1",
}
LOSS_COLUMNS = ("train_loss", "valid_loss")
NOT_PLOTTED = {"epoch", "seconds"}
CLASS_NAMES = ("normal", "cancer")

_FOLD_SUFFIX = re.compile(r"^(?P<group>.*?)[,;:\s]*\bfold\s*(?P<fold>\d+)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- helpers
def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _linestyle(i: int) -> str:
    return LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]


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


def _message_figure(title: str, message: str) -> bytes:
    """A small figure that says why there is nothing to draw (the report shows it in the figure's place)."""
    fig = Figure(figsize=(WIDTH, 2.0), layout="constrained")
    fig.suptitle(title)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#555555", transform=ax.transAxes)
    return _png(fig)


def split_fold_label(label: str) -> tuple[str, int | None]:
    """``"processed, fold 0"`` -> ``("processed", 0)``; a label without a fold is its own group."""
    match = _FOLD_SUFFIX.match(label)
    if match and match.group("group"):
        return match.group("group"), int(match.group("fold"))
    return label, None


def _metric_label(column: str) -> str:
    return METRIC_LABELS.get(column, column.replace("_", " ").capitalize())


# ------------------------------------------------------------------------------------ Figure 4: epochs
def _epoch_axis(frame: pd.DataFrame) -> np.ndarray:
    if "epoch" in frame.columns:
        return pd.to_numeric(frame["epoch"], errors="coerce").to_numpy(dtype=float)
    return np.arange(1, len(frame) + 1, dtype=float)


def _panels(frames: list[pd.DataFrame]) -> list[tuple[str, list[str]]]:
    """(panel title, columns drawn in it): one loss panel (train and validation), then one per metric."""
    columns: list[str] = []
    for frame in frames:
        for column in frame.columns:
            if column in NOT_PLOTTED or column in columns:
                continue
            if pd.to_numeric(frame[column], errors="coerce").notna().any():
                columns.append(column)
    panels = []
    losses = [c for c in LOSS_COLUMNS if c in columns]
    if losses:
        panels.append(("Loss (binary cross-entropy)", losses))
    known = [c for c in METRIC_LABELS if c in columns]
    other = [c for c in columns if c not in LOSS_COLUMNS and c not in METRIC_LABELS]
    panels.extend((_metric_label(c), [c]) for c in known + other)
    return panels


def epoch_curves(histories: dict[str, pd.DataFrame], title: str) -> bytes:
    """Per-epoch training and validation loss and validation metrics (the paper's Figure 4) as PNG bytes.

    ``histories`` maps a label such as ``"processed, fold 0"`` to a cell's ``history.csv`` (columns
    ``epoch, train_loss, valid_loss, accuracy, auc, precision, recall, f1, seconds``; any other numeric
    column gets its own panel, ``epoch`` and ``seconds`` are not drawn). Labels that differ only in the
    fold share a colour: thin lines are single folds, the thick line their mean over the folds present
    at each epoch. Every point has a marker, so a one-epoch run still shows.
    """
    frames: dict[str, pd.DataFrame] = {}
    for label, frame in histories.items():
        frame = pd.DataFrame(frame)
        if len(frame):
            frames[label] = frame
    if not frames:
        return _message_figure(title, "no training history to draw")

    groups: dict[str, list[tuple[int | None, pd.DataFrame]]] = {}
    for label, frame in frames.items():
        group, fold = split_fold_label(label)
        groups.setdefault(group, []).append((fold, frame))

    panels = _panels(list(frames.values()))
    if not panels:
        return _message_figure(title, "the histories hold no per-epoch values")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(WIDTH, 2.9 * nrows + 0.9), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)

    max_epoch = int(max(np.nanmax(_epoch_axis(f)) for f in frames.values()))
    # Groups side by side at each epoch (a small horizontal dodge): one-epoch points do not hide each other.
    dodge = 0.06 if len(groups) > 1 else 0.0
    for ax, (panel_title, columns) in zip(axes, panels, strict=False):
        for g, (_group, members) in enumerate(groups.items()):
            colour = _colour(g)
            shift = dodge * (g - (len(groups) - 1) / 2)
            for column in columns:
                style = "--" if column == "train_loss" else _linestyle(g)
                # Training loss: open markers, so a single epoch still tells it from the validation loss.
                face = "white" if column == "train_loss" else colour
                series = []
                for _fold, frame in members:
                    if column not in frame.columns:
                        continue
                    values = pd.Series(
                        pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float),
                        index=_epoch_axis(frame) + shift,
                    )
                    values = values[values.notna() & pd.notna(values.index)]
                    if values.empty:
                        continue
                    series.append(values)
                    if len(members) > 1:
                        ax.plot(
                            values.index,
                            values.to_numpy(),
                            style,
                            color=colour,
                            markerfacecolor=face,
                            alpha=0.35,
                            linewidth=1.0,
                            marker="o",
                            markersize=3.5,
                        )
                if not series:
                    continue
                # Mean over the folds that have a value at that epoch (a failed fold is simply absent).
                mean = pd.concat(series, axis=1).mean(axis=1, skipna=True).sort_index()
                ax.plot(
                    mean.index,
                    mean.to_numpy(),
                    style,
                    color=colour,
                    markerfacecolor=face,
                    linewidth=2.2,
                    marker="o",
                    markersize=6.5,
                    markeredgewidth=1.5,
                )
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if columns[0] in LOSS_COLUMNS else "score (0–1)")
        if max_epoch <= 12:
            ax.set_xticks(range(1, max(max_epoch, 1) + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, max(max_epoch, 1) + 0.5)
        if columns[0] in LOSS_COLUMNS:
            ax.set_ylim(bottom=0)
        elif columns[0] in METRIC_LABELS:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)

    handles = []
    for g, (group, members) in enumerate(groups.items()):
        folds = sorted(f for f, _ in members if f is not None)
        if len(members) > 1:
            name = f"{group} ({len(members)} folds)"
        elif folds:
            name = f"{group} (fold {folds[0]})"
        else:
            name = group
        handles.append(
            Line2D([], [], color=_colour(g), linestyle=_linestyle(g), marker="o", lw=2.2, label=name)
        )
    grey = "#555555"
    if any(len(members) > 1 for members in groups.values()):
        handles.append(Line2D([], [], color=grey, marker="o", lw=2.2, label="mean over folds"))
        handles.append(Line2D([], [], color=grey, marker="o", ms=3.5, lw=1.0, alpha=0.5, label="one fold"))
    if any(len(cols) == 2 for _, cols in panels):
        handles.append(
            Line2D(
                [], [], color=grey, linestyle="--", marker="o", markerfacecolor="white", label="training loss"
            )
        )
        handles.append(
            Line2D([], [], color=grey, linestyle="-", marker="o", label="validation loss, metrics")
        )
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=9, frameon=False
    )
    return _png(fig)


# ----------------------------------------------------------------------------- Figure 5: confusions
def confusion_from_metrics(metrics: dict) -> np.ndarray:
    """The 2×2 matrix [[tn, fp], [fn, tp]] from a cell's metrics.json (whole file, its ``"metrics"``
    part, or the ``"confusion"`` dict itself)."""
    confusion = metrics
    if "metrics" in confusion:
        confusion = confusion["metrics"]
    if "confusion" in confusion:
        confusion = confusion["confusion"]
    try:
        return np.array(
            [[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]], dtype=np.int64
        )
    except KeyError as missing:
        raise ValueError(f"no confusion matrix in these metrics: key {missing} missing") from None


def _check_matrix(label: str, matrix) -> np.ndarray:
    array = np.asarray(matrix)
    if array.shape != (2, 2):
        raise ValueError(f"confusion matrix {label!r}: expected shape (2, 2), got {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(
            f"confusion matrix {label!r}: counts must be finite and non-negative: {array.tolist()}"
        )
    return array


def confusion_matrices(matrices: dict[str, np.ndarray], title: str) -> bytes:
    """One 2×2 confusion matrix per data set (the paper's Figure 5) as PNG bytes.

    Each value is ``[[tn, fp], [fn, tp]]`` (rows: actual normal, cancer; columns: predicted), already
    summed over folds. Cells show the count and the row percentage (share of that actual class), and
    are shaded by the row percentage so panels of different sizes compare; a row with no images (a
    data set without positives) is grey and says so.
    """
    checked = {label: _check_matrix(label, m) for label, m in matrices.items()}
    if not checked:
        return _message_figure(title, "no confusion matrix to draw")

    ncols = 2 if len(checked) == 4 else min(3, len(checked))
    nrows = math.ceil(len(checked) / ncols)
    fig = Figure(figsize=(WIDTH, 3.6 * nrows + 0.7), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(checked) :]:
        ax.set_visible(False)

    cmap = _blues()
    image = None
    for ax, (label, counts) in zip(axes, checked.items(), strict=False):
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)
        image = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0, vmax=1)
        for r in range(2):
            for c in range(2):
                count = counts[r, c]
                text = f"{count:,.0f}" if float(count).is_integer() else f"{count:,.1f}"
                if np.isnan(share[r, c]):
                    text += "\n(no images)"
                    colour = "#333333"
                else:
                    text += f"\n{100 * share[r, c]:.1f}%"
                    colour = "white" if share[r, c] > 0.6 else "#111111"
                ax.text(c, r, text, ha="center", va="center", fontsize=12, color=colour)
        tn, fp, fn, tp = counts.ravel()
        n = counts.sum()
        rates = []
        if tp + fn > 0:
            rates.append(f"sensitivity {100 * tp / (tp + fn):.0f}%")
        if tn + fp > 0:
            rates.append(f"specificity {100 * tn / (tn + fp):.0f}%")
        ax.set_title(
            f"{label}\nn = {n:,.0f} ({tp + fn:,.0f} cancer)\n{', '.join(rates)}", fontsize=10, linespacing=1.3
        )
        ax.set_xticks([0, 1], CLASS_NAMES)
        ax.set_yticks([0, 1], CLASS_NAMES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_xticks([0.5], minor=True)
        ax.set_yticks([0.5], minor=True)
        ax.tick_params(which="minor", length=0)
        ax.grid(which="minor", color="white", linewidth=2)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes[: len(checked)]), shrink=0.8, format=PercentFormatter(1.0))
        bar.set_label("share of the actual class (row %)")
    return _png(fig)


def _blues():
    from matplotlib import colormaps

    return colormaps["Blues"].with_extremes(bad="#dddddd")


# ------------------------------------------------------------------------------------------------ ROC
def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """ROC curves as PNG bytes: one per key (a model or a label), AUC in the legend, chance diagonal.

    Each value is ``(y_true, probability)`` pooled over folds. Pairs with a missing probability are
    dropped; a curve with only one class present cannot be drawn and gets a legend note instead.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    # Fixed geometry (inches), because a square axes and constrained layout fight: a square ROC on the
    # left, the legend in its own column on the right (five models' entries would hide the curves).
    width, height, side = 9.5, 5.6, 4.4
    fig = Figure(figsize=(width, height))
    fig.suptitle(title, y=1 - 0.15 / height, va="top")
    ax = fig.add_axes((0.75 / width, 0.6 / height, side / width, side / height))
    ax.plot([0, 1], [0, 1], linestyle=":", color="#888888", linewidth=1.2, label="chance (AUC 0.5)")
    drawn = 0
    for i, (label, (y_true, probability)) in enumerate(curves.items()):
        y = np.asarray(y_true, dtype=float).ravel()
        p = np.asarray(probability, dtype=float).ravel()
        if y.shape != p.shape:
            raise ValueError(f"ROC {label!r}: {y.size} labels but {p.size} probabilities")
        keep = np.isfinite(y) & np.isfinite(p)
        y, p = y[keep].astype(int), p[keep]
        positives = int(y.sum())
        if len(np.unique(y)) < 2:
            only = "no images" if y.size == 0 else ("only cancer" if positives else "no cancer")
            ax.plot([], [], " ", label=f"{label}: not drawn, {only} (n = {y.size})")
            continue
        fpr, tpr, _ = roc_curve(y, p)
        auc = roc_auc_score(y, p)
        ax.plot(
            fpr,
            tpr,
            color=_colour(i),
            linestyle=_linestyle(i),
            linewidth=2,
            drawstyle="default",
            label=f"{label}: AUC {auc:.3f} (n = {y.size}, {positives} cancer)",
        )
        drawn += 1
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(True, alpha=0.3)
    if not curves:
        ax.text(0.5, 0.5, "no predictions", ha="center", va="center", color="#555555", fontsize=12)
    ax.legend(loc="upper left", bbox_to_anchor=(1.04, 1.0), borderaxespad=0, fontsize=9, frameon=False)
    return _png(fig, tight=True)  # tight: long legend labels widen the picture instead of being cut off


# ----------------------------------------------------------------------------------- contact sheet
def image_grid(pngs: list[tuple[str, bytes]], columns: int) -> bytes:
    """PNG images (caption, bytes) side by side in ``columns`` columns, each under its caption."""
    from matplotlib.image import imread

    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if not pngs:
        return _message_figure("", "no images")
    images = []
    for caption, data in pngs:
        try:
            images.append((caption, imread(io.BytesIO(data), format="png")))
        except Exception as error:
            raise ValueError(f"image {caption!r} is not a readable PNG: {error}") from None
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    aspect = max(img.shape[0] / img.shape[1] for _, img in images)
    cell = WIDTH / columns
    fig = Figure(figsize=(WIDTH, rows * (cell * aspect + 0.35)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (caption, img) in zip(axes, images, strict=False):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
    return _png(fig)
