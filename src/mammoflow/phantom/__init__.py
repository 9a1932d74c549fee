"""Synthetic screening-mammography data set in the Kaggle RSNA layout (the `phantom` stage).

The phantom stands in for the RSNA data when none is given, so it reproduces what the real pipeline
has to cope with: several scanner profiles (bit depths, MONOCHROME1/2, window tags, VOI LUT functions,
four transfer syntaxes), breasts on either side with a pectoral muscle on MLO views, burned-in text,
collimator strips and markers outside the breast, and lesions whose size and contrast are knobs.

Everything is derived from ``PhantomSpec.seed``: the catalog (train.csv) from per-patient streams and
every image from its own stream keyed by its row index, so the output is byte-identical whatever the
number of worker processes.

Outputs of :func:`generate`::

    out_dir/train.csv                                  # RSNA columns, one row per image
    out_dir/train_images/<patient_id>/<image_id>.dcm   # For-Presentation MG DICOM
    out_dir/lesions.csv                                # sidecar: lesion boxes in stored-pixel coordinates
Modules: ``catalog`` (spec, patients, train.csv), ``scanners`` (the profiles), ``anatomy`` (outline,
muscle, texture), ``lesions``, ``overlays`` (strips, text, marker), ``encoding`` (detector values, pixel
module, transfer syntaxes), ``render`` (one image), ``rsna`` (the DICOM headers and the writer).
"""

from mammoflow.phantom.anatomy import power_law_field
from mammoflow.phantom.catalog import (
    LESION_COLUMNS,
    TRAIN_COLUMNS,
    ImageTask,
    LesionPlan,
    PhantomSpec,
    build_catalog,
)
from mammoflow.phantom.render import RenderedImage, render_image
from mammoflow.phantom.rsna import build_dataset, generate, image_path
from mammoflow.phantom.scanners import MACHINES, Machine

__all__ = [
    "LESION_COLUMNS",
    "MACHINES",
    "TRAIN_COLUMNS",
    "ImageTask",
    "LesionPlan",
    "Machine",
    "PhantomSpec",
    "RenderedImage",
    "build_catalog",
    "build_dataset",
    "generate",
    "image_path",
    "power_law_field",
    "render_image",
]
