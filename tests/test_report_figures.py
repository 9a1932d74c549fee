"""The report's figures (mammoflow.report.figures) and the workflow picture (mammoflow.report.dag)."""

import io
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE_ENV
from matplotlib.image import imread

from mammoflow.report import dag, figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY_CSV = """epoch,train_loss,valid_loss,accuracy,auc,precision,recall,f1,seconds
1,0.7154465019702911,0.707408232628541,0.2,0.875,0.2,1.0,0.33333333333333337,0.5124838390001969
"""


def decoded(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    return image


def pixels_of(image: np.ndarray, colour: str, tolerance: float = 0.06) -> int:
    """How many pixels have ``colour`` (#rrggbb), give or take anti-aliasing."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < tolerance).sum())


def coloured(image: np.ndarray) -> int:
    """Pixels with any colour at all (the placeholder is grey text on white)."""
    rgb = image[..., :3]
    return int((rgb.max(axis=-1) - rgb.min(axis=-1) > 0.15).sum())


def drawn(png: bytes, series: int) -> np.ndarray:
    """A figure that draws data: each of the first ``series`` palette colours is on it, and no later one."""
    image = decoded(png)
    for i, colour in enumerate(figures.PALETTE[:6]):
        assert (pixels_of(image, colour) > 30) == (i < series), (i, colour, pixels_of(image, colour))
    return image


def placeholder(png: bytes) -> None:
    """The small grey figure that says why there is nothing to draw, not a plot."""
    image = decoded(png)
    assert image.shape[0] < 300 and coloured(image) == 0


def history(epochs: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e,
            "train_loss": 0.7 / e,
            "valid_loss": 0.5 + 0.05 * e,
            "accuracy": rng.uniform(0.8, 1, epochs),
            "auc": rng.uniform(0.5, 0.9, epochs),
            "precision": rng.uniform(0, 0.5, epochs),
            "recall": rng.uniform(0, 0.7, epochs),
            "f1": rng.uniform(0, 0.5, epochs),
            "seconds": 1.0,
        }
    )


# ------------------------------------------------------------------------------------------ figures
def test_epoch_curves_folds_of_three_data_sets():
    histories = {
        dataset: [history(3, seed=10 * d + k) for k in range(5)]
        for d, dataset in enumerate(["original", "processed", "processed + synthetic"])
    }
    image = drawn(figures.epoch_curves(histories, "resnet18, paper protocol, 256 px"), series=3)
    assert 1000 < image.shape[1] < 1300  # about 10.5 inches at 110 dpi


def test_epoch_curves_one_epoch_a_missing_fold_and_an_undefined_auc():
    one_epoch = pd.read_csv(io.StringIO(HISTORY_CSV))
    undefined = one_epoch.assign(auc=np.nan)  # a fold without positives: AUC is empty in history.csv
    drawn(
        figures.epoch_curves({"original": [one_epoch, undefined], "processed": [one_epoch]}, "one epoch"), 2
    )


def test_epoch_curves_without_histories_or_values():
    placeholder(figures.epoch_curves({}, "nothing yet"))
    placeholder(figures.epoch_curves({"empty": [pd.DataFrame(columns=["epoch", "auc"])]}, "no rows"))
    placeholder(figures.epoch_curves({"odd": [pd.DataFrame({"epoch": [1], "seconds": [2.0]})]}, "no metric"))


def test_confusion_matrices_with_and_without_positives():
    matrices = {
        "original": np.array([[950, 20], [15, 5]]),
        "processed": np.array([[900, 70], [10, 10]]),
        "processed + synthetic": np.array([[880, 90], [4, 16]]),
        "no cancer": np.array([[10, 3], [0, 0]]),
    }
    four = decoded(figures.confusion_matrices(matrices, "resnet18, 256 px"))
    one = decoded(figures.confusion_matrices({"only one": matrices["original"]}, "one panel"))
    # Shaded cells (Blues), the empty row of "no cancer" in grey; four panels in two rows are taller.
    assert coloured(one) > 5000 and coloured(four) > 2 * coloured(one) and four.shape[0] > one.shape[0]
    assert pixels_of(four, "#dddddd", 0.01) > 10_000 > 1_000 > pixels_of(one, "#dddddd", 0.01)
    placeholder(figures.confusion_matrices({}, "none"))
    with pytest.raises(ValueError, match="2x2"):
        figures.confusion_matrices({"bad": np.zeros(3)}, "bad")


def test_roc_curves_skip_one_class_curves():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    p_with_gap = p.copy()
    p_with_gap[:5] = np.nan
    curves = {
        "resnet18": (y, p),
        "resnet34": (y, p_with_gap),
        "no cancer": (np.zeros(30), rng.uniform(size=30)),
        "no images": (np.array([]), np.array([])),
    }
    drawn(figures.roc_curves(curves, "processed, 256 px"), series=2)  # the one-class pairs are not drawn
    empty = decoded(figures.roc_curves({}, "nothing"))  # axes and the chance diagonal only
    assert coloured(empty) == 0
    with pytest.raises(ValueError, match="labels"):
        figures.roc_curves({"bad": (np.zeros(3), np.zeros(4))}, "bad")


# ---------------------------------------------------------------------------------------------- DAG
@pytest.fixture(scope="module")
def real_rulegraph(tmp_path_factory) -> str:
    """The repository's rule graph for the tiny config (one Snakemake run for the whole module). An empty
    working directory is enough: the workflow has no checkpoints, so the graph does not depend on results."""
    config = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    with pytest.MonkeyPatch.context() as patch:  # Snakemake's SLURM plugin probe: see tests/shims/scontrol
        patch.setenv("PATH", SNAKEMAKE_ENV["PATH"])
        return dag.rulegraph_dot(REPO / "Snakefile", tmp_path_factory.mktemp("workdir"), config)


def test_edges_of_the_real_rulegraph(real_rulegraph):
    assert real_rulegraph.startswith("digraph") and real_rulegraph.rstrip().endswith("}")
    named = set(dag.edges(real_rulegraph).itertuples(index=False, name=None))
    assert {("preprocess", "train"), ("folds", "train"), ("phantom", "decode"), ("train", "all")} <= named


def test_workflow_picture_drawn_by_graphviz(real_rulegraph, monkeypatch):
    if not shutil.which("dot"):
        pytest.skip("Graphviz's `dot` is not installed (`apt-get install graphviz`; .ci/run does as root)")
    monkeypatch.setattr(dag, "rulegraph_dot", lambda *args: real_rulegraph)
    picture = dag.workflow_picture(REPO / "Snakefile", REPO, {}, {"train": 12, "decode": 2})
    svg = picture["svg"]
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "DOCTYPE" not in svg
    assert "train ×12" in svg and "decode ×2" in svg and picture["edges"] is None


def test_workflow_picture_without_graphviz_is_its_edges(real_rulegraph, monkeypatch):
    monkeypatch.setattr(dag, "rulegraph_dot", lambda *args: real_rulegraph)
    counts = {"train": 12, "decode": 2}
    monkeypatch.setattr(dag.shutil, "which", lambda name: None)  # no Graphviz: the edges, and why
    plain = dag.workflow_picture(REPO / "Snakefile", REPO, {}, counts)
    assert plain["svg"] is None and "not installed" in plain["note"]
    assert ("train ×12", "all") in set(plain["edges"].itertuples(index=False, name=None))


def fake_python(tmp_path, script: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_rulegraph_dot_output_and_failure(tmp_path, monkeypatch):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text("rule all:\n")
    noisy = "echo 'Building DAG of jobs...'\necho 'digraph snakemake_dag {'\n"
    noisy += "echo '0[label = \"all\"];'\necho '}  '\n"
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, noisy))
    assert dag.rulegraph_dot(snakefile, tmp_path, {}) == 'digraph snakemake_dag {\n0[label = "all"];\n}\n'
    failing = fake_python(tmp_path, "echo 'WorkflowError: bad config' >&2\nexit 1\n")
    monkeypatch.setattr(sys, "executable", failing)
    with pytest.raises(RuntimeError, match="bad config"):
        dag.rulegraph_dot(snakefile, tmp_path, {})
    picture = dag.workflow_picture(snakefile, tmp_path, {}, {})
    assert picture["svg"] is None and "bad config" in picture["note"]


def test_rulegraph_config_reaches_snakemake_as_json(tmp_path, monkeypatch):
    # The fake interpreter copies the --configfile it is given, to check what Snakemake would read.
    copy = tmp_path / "seen.json"
    script = f'while [ "$1" != "--configfile" ]; do shift; done\ncp "$2" {copy}\necho "digraph g {{}}"\n'
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, script))
    dag.rulegraph_dot(tmp_path / "Snakefile", tmp_path, {"protocols": ["clean", "paper"], "dir": tmp_path})
    assert json.loads(copy.read_text()) == {"protocols": ["clean", "paper"], "dir": str(tmp_path)}
