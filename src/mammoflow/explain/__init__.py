"""Explanations (the `cam` stage): Grad-CAM maps of a trained cell's validation images, a box centred on each
map's peak, and the pointing-game score against known lesion boxes (docs/cam.md).

gradcam.py: which layer to explain per architecture, and batched Grad-CAM that keeps each map's raw peak.
boxes.py:   peak, box and score geometry (pure numpy).
figure.py:  the Figure 6 triptychs (original | CAM overlay | box).
stage.py:   one cell: choose images, explain them, write the outputs.
"""
