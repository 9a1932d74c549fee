"""Which images Figure 6 shows: predicted positives, hits and misses both, highest probability first."""

import pandas as pd

from mammoflow.explain.figure import choose_examples


def _boxes(probability, positive, hit):
    return pd.DataFrame(
        {
            "probability": probability,
            "predicted_positive": positive,
            "hit": pd.array(hit, dtype="boolean"),
        }
    )


def test_hits_and_misses_both_appear():
    # Sorted by probability; the top three are misses, the hits come further down.
    boxes = _boxes(
        [0.99, 0.98, 0.97, 0.9, 0.8, 0.6, 0.4, 0.3],
        [True, True, True, True, True, True, False, False],
        [False, False, False, True, None, True, True, None],
    )
    picked = choose_examples(boxes, 4)
    assert len(picked) == 4 and picked == sorted(picked)
    chosen = boxes.iloc[picked]
    assert chosen["hit"].eq(True).sum() == 2 and chosen["hit"].eq(False).sum() == 2
    assert chosen["predicted_positive"].all()


def test_fills_with_other_positives_then_top_scores():
    boxes = _boxes([0.9, 0.7, 0.4, 0.2], [True, True, False, False], [None, True, None, None])
    assert choose_examples(boxes, 3) == [0, 1, 2]
    assert choose_examples(boxes, 10) == [0, 1, 2, 3]
    assert choose_examples(boxes, 0) == [] and choose_examples(boxes.iloc[:0], 3) == []
