"""The whole report page from a hand-made results tree with both protocols, in a real browser: its own
check passes, it shows what issue 15 asks for, and the check catches a broken page."""

import json

import numpy as np
import pandas as pd
from browser import load

from mammoflow.classify.metrics import cell_metrics
from mammoflow.report.build import Inputs, build_report


def _cell(results, protocol, dataset, fold, rng):
    rows = [(p * 10 + i, p, "LR"[i // 2], ("CC", "MLO")[i % 2], int(p % 3 == 0 and i < 2), "real", fold)
            for p in range(fold * 9, fold * 9 + 9) for i in range(4)]  # fmt: skip
    if protocol == "paper" and dataset == "augmented":
        rows += [
            (9000 + 10 * fold + i, -1 - i - 10 * fold, "L", "SYN", 1, "synthetic", fold) for i in range(3)
        ]
    frame = pd.DataFrame(
        rows, columns=["image_id", "patient_id", "laterality", "view", "cancer", "source", "fold"]
    )
    frame["probability"] = np.clip(0.4 * frame["cancer"] + 0.6 * rng.random(len(frame)), 0, 1)
    metrics, warnings = cell_metrics(frame)
    if (frame["source"] == "synthetic").any():
        metrics["real_only"], _ = cell_metrics(frame[frame["source"] == "real"])
    cell = results / "train" / protocol / "32" / dataset / "resnet18" / f"fold{fold}"
    cell.mkdir(parents=True)
    frame.to_parquet(cell / "predictions.parquet")
    summary = {"metrics": metrics, "warnings": warnings, "seconds": 1.0, "weights": "random", "device": "cpu"}
    (cell / "metrics.json").write_text(json.dumps(summary))


def test_page_of_both_protocols_in_a_browser(tmp_path):
    rng = np.random.default_rng(0)
    results = tmp_path / "results"
    for protocol in ("clean", "paper"):
        for dataset in ("processed", "augmented"):
            for fold in range(2):
                _cell(results, protocol, dataset, fold, rng)
    external = results / "predict" / "site-b" / "external.json"
    external.parent.mkdir(parents=True)
    record = {"name": "site-b", "data_dir": "/data/b", "models": ["m0", "m1"], "protocol": "clean",
              "resolution": 32, "dataset": "processed", "aggregation": "mean", "n_images": 40,
              "n_breasts": 20, "n_failed": 0, "image": {"auc": {"value": 0.71, "lo": 0.6, "hi": 0.8}},
              "breast": {"pf1": {"value": 0.33, "lo": 0.2, "hi": 0.4}},
              "thresholds": {"pf1_oof": 0.4, "spec90_oof": 0.6}}  # fmt: skip
    external.write_text(json.dumps(record))
    minimal = results / "predict" / "minimal" / "external.json"  # fields missing: shown as "?", no failure
    minimal.parent.mkdir(parents=True)
    minimal.write_text(json.dumps({"image": {"auc": 0.6}}))
    config = {"rsna_dir": "", "protocols": ["clean", "paper"], "resolutions": [32],
              "datasets": ["processed", "augmented"], "models": ["resnet18"], "folds": {"k": 2},
              "report": {"bootstrap": 50, "seed": 0}}  # fmt: skip
    out = results / "report"
    summary = build_report(Inputs(results, tmp_path, config, None, out))
    assert summary["comparisons"] == 2
    check, images, problems, dom = load(out / "index.html", screenshot=tmp_path / "page.png")
    assert (check, problems) == ("ok", []) and images >= 4  # ROC curves, confusion matrices
    shown = [
        "clean protocol, 32 px",
        "paper protocol, 32 px",
        "processed + synthetic, real images only",
        "breast, as RSNA scored",
        "pF1 at OOF threshold",
        "Protocols compared",
        "paper − clean (95% CI)",
        "site-b: 40 images, 20 breasts",
        "minimal: ? images, ? breasts<",
        "The paper's Table 2 as published",
        "data audit not possible",
    ]
    for text in shown:
        assert text in dom, text
    comparison = pd.read_csv(out / "protocols.csv")
    assert f"{comparison['difference'].iloc[0]:+.3f}" in dom  # the page shows what protocols.csv holds

    broken = tmp_path / "broken.html"
    bad = (
        '<img src="data:image/png;base64,bm90IGEgcG5n" alt="bad bytes"><script>undefinedFunction();</script>'
    )
    broken.write_text((out / "index.html").read_text().replace("<footer", bad + "<footer"))
    check, _, problems, _ = load(broken)
    assert check == "errors"
    assert any("bad bytes" in p for p in problems)
    assert any("script error" in p and "undefinedFunction" in p for p in problems)
