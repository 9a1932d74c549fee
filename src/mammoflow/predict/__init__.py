"""Applying trained models to new mammograms (`mammoflow predict`): predictions, a Kaggle submission,
Grad-CAM panels of flagged breasts and, with labels, external validation.

inputs.py:     the input folder (RSNA train/test layout or plain DICOMs) as one row per image.
prepare.py:    decode and preprocess as the models' training images were.
ensemble.py:   which cells to apply, fold ensembles, out-of-fold predictions.
explain.py:    Grad-CAM panels.
run.py:        the whole command (operating points and bootstrap metrics: mammoflow.stats).
"""
