"""Folds: patient-grouped for `clean`, image-level for `paper`, stratified, seeded."""

import numpy as np
import pandas as pd
import pytest

from mammoflow.folds import FoldError, assign_folds, make_folds, patients_in_several_folds


def _images(patients=60, positive_patients=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        sick_side = rng.choice(["L", "R"]) if p < positive_patients else None
        for side in "LR":
            for view in ("CC", "MLO"):
                rows.append((1000 + p, int(rng.integers(1e9)), side, view, int(side == sick_side)))
    return pd.DataFrame(rows, columns=["patient_id", "image_id", "laterality", "view", "cancer"])


def test_clean_folds_group_patients_and_stratify():
    images = _images()
    folds = make_folds(images, k=5, seed=1)
    assert set(folds["protocol"]) == {"clean", "paper"}
    assert patients_in_several_folds(folds, "clean") == 0
    clean = folds[folds.protocol == "clean"]
    positives_per_fold = clean.groupby("fold")["cancer"].sum()
    assert len(positives_per_fold) == 5 and positives_per_fold.min() >= 2  # 12 sick patients over 5 folds
    assert clean["image_id"].is_unique and len(clean) == len(images)


def test_paper_folds_split_images_and_leak_patients():
    folds = make_folds(_images(), k=5, seed=1)
    assert patients_in_several_folds(folds, "paper") > 0  # the study's leak, reproduced on purpose
    paper = folds[folds.protocol == "paper"]
    counts = paper.groupby("fold")["cancer"].agg(["size", "sum"])
    assert counts["size"].max() - counts["size"].min() <= 1
    assert counts["sum"].max() - counts["sum"].min() <= 1


def test_folds_are_seeded():
    images = _images()
    a, b = make_folds(images, 5, 7), make_folds(images.sample(frac=1, random_state=3), 5, 7)
    pd.testing.assert_frame_equal(a, b)  # same seed, any input order: same folds
    c = make_folds(images, 5, 8)
    assert not np.array_equal(a["fold"], c["fold"])


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(FoldError, match="5 folds need at least 5 patients; the data set has 3"):
        assign_folds(_images(patients=3, positive_patients=1), 5, 0, "clean")


def test_a_clean_fold_without_training_positives_fails_at_the_folds_step():
    from mammoflow.folds import FoldError, make_folds

    # One positive patient: the clean fold holding it leaves its training part without any.
    images = pd.DataFrame(
        {
            "image_id": range(40),
            "patient_id": [i // 4 for i in range(40)],
            "cancer": [int(i < 4) for i in range(40)],
        }
    )
    make_folds(images, 2, 0, ("clean",))  # fine without the requirement (no `augmented`)
    with pytest.raises(
        FoldError, match=r"clean fold \d: its training part has 0 positive patients \(of 1 in all\)"
    ):
        make_folds(images, 2, 0, ("clean", "paper"), require_positive_training=True)
