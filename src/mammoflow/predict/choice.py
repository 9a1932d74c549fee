"""Which trained cells a prediction uses when the user does not say: one rule for `mammoflow predict`
(predict/ensemble.py, over the cells it finds) and the workflow's predict rule (mammoflow.plan.predict,
over the config's matrix). Standard library only: the Snakemake driver imports it."""

from __future__ import annotations

# The preferred value of each choice, best first: the clean protocol (no leakage) and the processed data
# set (what the paper's best rows used) when trained; the highest resolution.
PREFERRED = {"protocol": ("clean",), "dataset": ("processed", "original", "augmented")}


def pick(column: str, available, wanted=None):
    """``wanted`` when it is available (ValueError when not), else the preferred available value, else the
    highest (resolution: always the highest)."""
    values = sorted(set(available), key=lambda v: (isinstance(v, str), v))
    if not values:
        raise ValueError(f"no trained cells to choose a {column} from")
    if wanted is None:
        wanted = next((v for v in PREFERRED.get(column, ()) if v in values), values[-1])
    if wanted not in values:
        raise ValueError(f"no trained cells with {column} {wanted!r}; available: {values}")
    return wanted
