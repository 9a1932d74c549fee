"""Preprocessing: VOI LUT windowing as the DICOM standard defines it, breast crop, resize, box mapping."""

import cv2
import numpy as np
import pandas as pd
import pytest
from dicom_factory import mammo_like
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut

from mammoflow.preprocess import (
    Box,
    ProcessOptions,
    breast_mask,
    crop_box,
    place,
    prepare_original,
    prepare_processed,
    voi_window,
    window_image,
)


def _pydicom_window(stored, center, width, function, bits=12):
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = bits, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    return apply_voi_lut(stored.astype(np.float64), ds) / ((1 << bits) - 1)


@pytest.mark.parametrize("function", ["LINEAR", "SIGMOID", "LINEAR_EXACT"])
def test_window_matches_pydicom(function):
    stored = np.arange(0, 4096, 7, dtype=np.uint16)
    ours = voi_window(stored, 1800.0, 1200.0, function)
    np.testing.assert_allclose(ours, _pydicom_window(stored, 1800.0, 1200.0, function), atol=1e-5)


def _meta(**kw):
    base = dict(window_centers=[1800.0], window_widths=[1200.0], voi_lut_function="LINEAR", inverted=False,
                bits_stored=12, rescale_slope=1.0, rescale_intercept=0.0, laterality="L")  # fmt: skip
    return pd.Series({**base, **kw})


@pytest.mark.parametrize("function", ["LINEAR", "SIGMOID"])
def test_monochrome1_windowing_is_exact(function):
    """Decode inverted a MONOCHROME1 image; windowing it must equal the standard: window, then invert."""
    stored = np.random.default_rng(0).integers(0, 4096, (50, 40)).astype(np.uint16)
    decoded = (4095 - stored).astype(np.uint16)
    ours = window_image(
        decoded, _meta(inverted=True, voi_lut_function=function), None, ProcessOptions.configured()
    )
    expected = 1.0 - _pydicom_window(stored, 1800.0, 1200.0, function)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_window_choice_and_rescale():
    stored = np.linspace(0, 4095, 100).astype(np.uint16)
    meta = _meta(window_centers=[1800.0, 500.0], window_widths=[1200.0, 400.0])
    second = window_image(stored, meta, None, ProcessOptions.configured(window_index=1))
    np.testing.assert_allclose(second, _pydicom_window(stored, 500.0, 400.0, "LINEAR"), atol=1e-5)
    # The window is in rescaled (modality) units: slope 2 doubles the values before windowing.
    rescaled = window_image(stored, _meta(rescale_slope=2.0), None, ProcessOptions.configured())
    np.testing.assert_allclose(rescaled, voi_window(stored * 2.0, 1800.0, 1200.0), atol=1e-6)


def test_fallback_window_without_tags_uses_breast_range():
    image = mammo_like(bits=16, seed=3)
    mask = image > image.mean()
    y = window_image(image, _meta(window_centers=[], window_widths=[]), mask, ProcessOptions.configured())
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert 0.3 < np.median(y[mask]) < 0.7  # the breast spans the window, not a sliver of it


def _cluttered(seed=0, chest_wall_right=False):
    """Breast at the chest wall, a bright border strip on the far edge, burned-in text and a marker."""
    image = mammo_like(rows=400, cols=320, bits=12, seed=seed).astype(np.float32)
    if chest_wall_right:
        image = image[:, ::-1].copy()
    far = slice(0, 10) if chest_wall_right else slice(-10, None)
    image[:, far] = 3000
    text_x = 30 if chest_wall_right else 220
    labels = np.zeros(image.shape, np.uint8)  # OpenCV 5 draws text on 8-bit images only
    cv2.putText(labels, "L MLO", (text_x, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 255, 2)
    cv2.rectangle(labels, (text_x + 10, 360), (text_x + 30, 380), 255, -1)
    image[labels > 0] = 4095
    return np.clip(image, 0, 4095).astype(np.uint16)


@pytest.mark.parametrize("right", [False, True])
def test_crop_keeps_breast_and_drops_labels(right):
    image = _cluttered(chest_wall_right=right)
    truth = mammo_like(rows=400, cols=320, bits=12) > 1000
    if right:
        truth = truth[:, ::-1]
    ys, xs = np.nonzero(truth)
    mask, to_image = breast_mask(image, ProcessOptions.configured().opening)
    box = crop_box(mask, to_image, image.shape, margin=0.0)
    assert box.x0 <= xs.min() + 2 and box.x1 >= xs.max() - 1  # whole breast kept
    assert box.y0 <= ys.min() + 2 and box.y1 >= ys.max() - 1
    assert box.x1 - box.x0 < 0.7 * image.shape[1]  # strip, text and marker are outside
    text_columns = range(30, 130) if right else range(220, 320)
    assert not (box.x0 <= text_columns.start and box.x1 >= text_columns.stop)


def test_processed_and_original_shapes_and_box_mapping():
    image = _cluttered()
    meta = _meta(window_centers=[1500.0], window_widths=[3000.0])
    processed = prepare_processed(image, meta, 64, ProcessOptions.configured())
    assert processed.image.shape == (64, 64) and processed.image.dtype == np.uint8
    assert processed.image.max() > 230 and processed.image[:, 0].mean() > processed.image[:, -1].mean()
    crop = processed.crop
    corner = processed.placement.box(Box(crop.x0, crop.y0, crop.x1, crop.y1))
    np.testing.assert_allclose([corner.x0, corner.y0, corner.x1, corner.y1], [0, 0, 64, 64], atol=1e-6)

    original = prepare_original(image, 32)
    assert original.image.shape == (32, 32)
    assert original.image.min() < 16 and original.image.max() > 160  # full range before area-resizing


def test_pad_keeps_aspect_and_chest_wall_side():
    tall = np.ones((200, 100), np.float32)
    out, placement = place(tall, 64, "pad", chest_wall_right=True)
    assert out[:, -32:].min() > 0.999 and out[:, :31].max() == 0
    assert placement.sx == placement.sy == pytest.approx(0.32)
    with pytest.raises(ValueError, match=r"preprocess\.resize: 'crop' is not one of \['stretch', 'pad'\]"):
        ProcessOptions.configured(resize="crop")
    with pytest.raises(ValueError, match=r"preprocess: unknown setting\(s\) windw_index"):
        ProcessOptions.configured(windw_index=1)
