"""The phantom's realism where it matters for learning: benign calcifications in every kind of breast,
implants, vessels, ligaments, a textured muscle, clinical JPEG 2000 codestreams, and no label in anything
but the lesion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.encaps import generate_frames

from mammoflow.phantom import MACHINES, PhantomSpec, build_catalog, generate, render_image
from mammoflow.phantom.anatomy import anatomy_of
from mammoflow.phantom.catalog import IMAGE_STREAM, stream_rng

BIG = PhantomSpec.configured(patients=2000, prevalence=0.5, seed=5)  # catalog only: no pixels are rendered
SMALL = PhantomSpec.configured(patients=6, prevalence=0.5, seed=11, size_scale=0.08)


def _breasts(spec: PhantomSpec) -> pd.DataFrame:
    frame, tasks = build_catalog(spec)
    frame["benign"] = [len(t.benign) for t in tasks]
    return frame[frame["view"] == "CC"]  # one row per breast


def test_benign_calcifications_in_negatives_as_often_as_in_positives() -> None:
    breasts = _breasts(BIG)
    share = breasts.groupby("cancer")["benign"].apply(lambda n: float((n > 0).mean()))
    assert 0.4 < share[0] < 0.6 and 0.4 < share[1] < 0.6
    assert abs(share[0] - share[1]) < 0.06  # drawn from their own stream, blind to the label


def test_nothing_but_the_lesion_carries_the_label() -> None:
    """Scanner, site, laterality, implant and view are drawn independently of cancer."""
    frame, _ = build_catalog(BIG)
    breasts = frame[frame["view"] == "CC"]
    overall = breasts["cancer"].mean()
    for column in ("machine_id", "laterality", "implant"):
        rates = breasts.groupby(column)["cancer"].agg(["mean", "size"])
        for value, (rate, size) in rates.iterrows():
            if size >= 100:  # about 0.1 of sampling spread at most
                assert abs(rate - overall) < 0.12, (column, value, rate, overall)
    assert frame.groupby("view")["cancer"].mean().nunique() == 1


def _negative_with_benign(spec: PhantomSpec):
    _, tasks = build_catalog(spec)
    return next(t for t in tasks if not t.lesions and len(t.benign) >= 3)


def test_benign_calcifications_are_drawn_but_are_no_lesion() -> None:
    task = _negative_with_benign(SMALL)
    with_calcs = render_image(SMALL, task)
    without = render_image(SMALL, dataclasses.replace(task, benign=()))
    assert with_calcs.boxes == []  # not a lesion: no box in lesions.csv
    diff = with_calcs.pixels.astype(np.int64) - without.pixels.astype(np.int64)
    if task.machine.photometric == "MONOCHROME1":
        diff = -diff
    bright = diff > 0.1 * task.machine.max_value * task.machine.gain
    assert 1 <= bright.sum() < 0.01 * bright.size  # a few specks, small against the breast
    assert (with_calcs.breast_mask | ~bright).all()


def test_implant_is_drawn_and_keeps_lesions_off_it() -> None:
    spec = dataclasses.replace(SMALL, mass_contrast=0.5)
    _, tasks = build_catalog(spec)
    task = next(t for t in tasks if t.lesions and t.view == "CC")
    rng = stream_rng(spec.seed, IMAGE_STREAM, task.index).spawn(5)[0]
    anatomy = anatomy_of(rng, dataclasses.replace(task, implant=True), (200, 160), 0.5)
    plain = anatomy_of(stream_rng(spec.seed, IMAGE_STREAM, task.index).spawn(5)[0], task, (200, 160), 0.5)
    assert not plain.implant.any()
    share = anatomy.implant.sum() / anatomy.mask.sum()
    assert 0.1 < share < 0.6
    assert anatomy.brightness[anatomy.implant].mean() > 0.85 > plain.brightness[anatomy.implant].mean()
    image = render_image(spec, dataclasses.replace(task, implant=True))
    assert image.boxes  # the lesion found tissue beside the implant


def test_catalog_marks_implants_it_draws() -> None:
    frame, tasks = build_catalog(BIG)
    assert frame["implant"].tolist() == [int(t.implant) for t in tasks]
    assert 0.01 < frame["implant"].mean() < 0.06


def test_vessels_ligaments_and_a_textured_muscle() -> None:
    _, tasks = build_catalog(SMALL)
    mlo = next(t for t in tasks if t.view == "MLO")

    def anatomy(structures: bool):
        rng = stream_rng(SMALL.seed, IMAGE_STREAM, mlo.index).spawn(5)[0]
        if not structures:  # the same draws, the structure stream's contribution zeroed
            import mammoflow.phantom.anatomy as module

            saved = module._ligaments, module._vessels
            module._ligaments = module._vessels = lambda rng, mask, *a: np.zeros(mask.shape, np.float32)
            try:
                return anatomy_of(rng, mlo, (400, 320), 0.25)
            finally:
                module._ligaments, module._vessels = saved
        return anatomy_of(rng, mlo, (400, 320), 0.25)

    full, bare = anatomy(True), anatomy(False)
    added = (full.brightness - bare.brightness)[full.mask & ~full.pectoral]
    assert (added > 0.01).mean() > 0.01  # thin lines over a visible part of the breast
    assert (added > 0.01).mean() < 0.5
    muscle = full.brightness[full.pectoral]
    assert muscle.std() > 0.02  # fibres and a gradient, not a flat plate


def test_jpeg2000_carries_clinical_decomposition_levels(tmp_path: Path) -> None:
    """Clinical encoders write 5-6 wavelet levels; reduced-resolution decoding needs them there."""
    generate(tmp_path, SMALL, workers=1, progress=False)
    j2k = {m.machine_id for m in MACHINES if "90" in m.transfer_syntax}
    seen = 0
    for path in sorted(tmp_path.glob("train_images/*/*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.4.90":
            continue
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        cod = frame.index(b"\xff\x52")  # COD marker: Lcod, Scod, SGcod (4 bytes), then the levels
        assert frame[cod + 9] == 5, path
        seen += 1
    assert j2k and seen >= 4


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_benign_fraction_is_a_knob(fraction: float) -> None:
    breasts = _breasts(dataclasses.replace(BIG, patients=200, benign_calcification_fraction=fraction))
    assert float((breasts["benign"] > 0).mean()) == fraction
