"""Grad-CAM on the last feature map before global pooling, as fastai does it (the study's Figure 6).

The layer explained is the one whose output the classifier's pooling reads (the timm body's
``forward_features``): for every architecture of the study that is the network's final, post-activation
feature map. The score explained is the one the probability is made of: with fastai's two outputs the
log-odds of cancer, logit 1 - logit 0 (``PositiveScore``; its sigmoid is the softmax's cancer probability).
Grad-CAM itself is pytorch-grad-cam's; the subclass only keeps each map's raw maximum, which the library
throws away when it min-max normalises every map to [0, 1].

Alignment. grad-cam (like fastai's plot) stretches the h x w map over the image, which puts cell j's centre
at (j + 0.5) * res / w. The convolutions of these networks put it elsewhere: with a 3x3/stride-2/padding-1
convolution (or 7x7/2/3, or 3x3 max-pool/2/1) output pixel i is centred on input pixel 2i, so after five
such halvings cell j of a ResNet sits on input pixel 32j, half a cell (15.5 px) up and left of where the
stretched map shows it. ``feature_grid`` reads the true geometry off the network's strided layers, and
``align_maps`` moves the upsampled maps there (docs/cam.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM, HiResCAM
from torch import nn

from mammoflow.classify.models import normalize_batch, positive_probability, positive_score, trunk
from mammoflow.progress import progress

# Pooling layers end the feature extractor; their 4-D N x C x 1 x 1 output is not a map.
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


class UnknownArchitecture(ValueError):
    pass


class PositiveScore:
    """pytorch-grad-cam target: the log-odds of cancer of one image's outputs (a single logit as it is).

    fastbook's Grad-CAM differentiates one class's logit; with two classes that would also credit evidence
    that raises both logits alike, which leaves the probability where it was. The difference is what the
    softmax turns into P(cancer)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return positive_score(output.reshape(1, -1))[0]


def target_layer(model: nn.Module, name: str, fallback_res: int | None = None) -> tuple[nn.Module, str]:
    """The module whose output Grad-CAM explains, and its name (for the summary).

    - ResNets: ``layer4[-1]``, the last residual block (post-ReLU; its output is ``layer4``'s output).
    - EfficientNet: ``bn2``, timm's BatchNormAct2d after ``conv_head``: BN + SiLU. ``conv_head`` alone would
      be the pre-activation map; the pooling reads ``bn2``'s output, as it reads layer4's after the ReLU.
    - MaxViT (timm MaxxVit): ``norm`` (LayerNorm2d, N x C x H x W) after ``stages[-1]``; where a variant's
      ``norm`` is an Identity (the norm sits in the head, after pooling) ``stages[-1]`` is the same tensor.
      Both are channels-first, so no reshape_transform is needed.

    These are modules of the timm body (``model.body`` of fastai's classifier).

    Any other architecture raises UnknownArchitecture unless ``fallback_res`` is given: then the last module
    (in execution order, pooling layers excluded) whose output is a 4-D tensor for a 1-channel
    ``fallback_res`` input, found with forward hooks.
    """
    known = _stage_outputs(model, name)
    if known:
        return known[0]
    body = trunk(model)  # the head's concat pooling also returns a 4-D tensor (N x 2C x 1 x 1): not a map
    if fallback_res is None:
        raise UnknownArchitecture(
            f"no Grad-CAM target layer is known for model {name!r} (known: resnet*, efficientnet*, maxvit*); "
            "add it to mammoflow.explain.gradcam.target_layer"
        )
    layer_name = last_feature_map(body, fallback_res)
    return body.get_submodule(layer_name), f"{layer_name} (fallback: last 4-D feature map)"


def _stage_outputs(model: nn.Module, name: str) -> list[tuple[nn.Module, str]]:
    """The known architectures' stage outputs, deepest first: the layer above, then the earlier stages."""
    model = trunk(model)
    if name.startswith(("resnet", "resnext", "seresnet", "wide_resnet")) and hasattr(model, "layer4"):
        return [(getattr(model, f"layer{i}")[-1], f"layer{i}[-1]") for i in (4, 3, 2, 1)]
    if name.startswith(("efficientnet", "tf_efficientnet")) and hasattr(model, "bn2"):
        blocks = [(model.blocks[i], f"blocks[{i}]") for i in reversed(range(len(model.blocks)))]
        return [(model.bn2, "bn2"), *blocks]
    if name.startswith(("maxvit", "maxxvit", "coatnet")) and hasattr(model, "stages"):
        last = len(model.stages) - 1
        norm = getattr(model, "norm", None)
        top = (norm, "norm") if norm is not None and not isinstance(norm, nn.Identity) else None
        stages = [(model.stages[i], f"stages[{i}]") for i in range(last, -1, -1)]
        return [top, *stages[1:]] if top else stages
    return []


def explained_layer(
    model: nn.Module, name: str, res: int, min_cells: int = 1
) -> tuple[nn.Module, str, str | None]:
    """The layer Grad-CAM explains at ``res`` px: ``target_layer``'s, unless its map has fewer than
    ``min_cells`` cells on a side; then the deepest earlier stage whose map has that many (the shallowest
    stage when none has). Returns (module, name, why) where ``why`` says what was changed and why, or None.

    The study explains the last feature map (stride 32: 8 x 8 cells at 256 px, 16 x 16 at 512). At the
    demo's 32 px that map is 1 x 1: one number, constant over the image, so it points nowhere. A map of 8 x 8
    (ResNet's layer1 at 32 px, stride 4) is as fine as the study's at 256 px; it is a less abstract
    feature, and the summary names the layer explained.
    """
    layer, layer_name = target_layer(model, name, fallback_res=res)
    stages = _stage_outputs(model, name)
    if min_cells <= 1 or not stages:
        return layer, layer_name, None
    shapes = _map_shapes(model, [module for module, _ in stages], res)
    if min(shapes[0]) >= min_cells:
        return layer, layer_name, None
    chosen = next((i for i, shape in enumerate(shapes) if min(shape) >= min_cells), len(stages) - 1)
    module, chosen_name = stages[chosen]
    h, w = shapes[0]
    ch, cw = shapes[chosen]
    why = (
        f"{layer_name}'s map is {h} x {w} at {res} px, fewer than cam.min_cells={min_cells} cells a side: "
        f"the map of {chosen_name} ({ch} x {cw}) is explained instead"
    )
    return module, chosen_name, why


def _map_shapes(model: nn.Module, layers: list[nn.Module], res: int) -> list[tuple[int, int]]:
    """Each layer's output height and width for a res x res input (one blank forward pass)."""
    shapes: dict[int, tuple[int, int]] = {}
    handles = []
    for index, layer in enumerate(layers):

        def hook(_module, _inputs, output, index=index):
            shapes[index] = tuple(output.shape[-2:]) if isinstance(output, torch.Tensor) else (0, 0)

        handles.append(layer.register_forward_hook(hook))
    _probe(model, res, handles)
    return [shapes.get(i, (0, 0)) for i in range(len(layers))]


def last_feature_map(model: nn.Module, res: int) -> str:
    """Qualified name of the last non-pooling module whose output is N x C x H x W, for a res x res input."""
    seen: list[str] = []
    handles = []
    for module_name, module in model.named_modules():
        if not module_name or isinstance(module, _POOLS) or "pool" in module_name.split(".")[-1].lower():
            continue

        def hook(_module, _inputs, output, module_name=module_name):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                seen.append(module_name)

        handles.append(module.register_forward_hook(hook))
    _probe(model, res, handles)
    if not seen:
        raise UnknownArchitecture(f"{type(model).__name__}: no module returns a 4-D feature map")
    return seen[-1]


@dataclass(frozen=True)
class Grid:
    """Where the feature map's cells sit on the image, in the stores' continuous pixel coordinates:
    cell (i, j) is centred at (x0 + j * sx, y0 + i * sy)."""

    x0: float
    y0: float
    sx: float
    sy: float

    @classmethod
    def stretched(cls, res: int, h: int, w: int) -> Grid:
        """The geometry grad-cam's and fastai's plots assume: the map stretched over the image."""
        return cls(res / w / 2, res / h / 2, res / w, res / h)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Left/top padding of TensorFlow 'SAME' (timm's *Same layers): the smaller half."""
    return max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0) // 2


def feature_grid(model: nn.Module, layer: nn.Module, res: int) -> tuple[Grid, tuple[int, int]]:
    """The true centres of ``layer``'s output cells for a res x res input, from the strided layers before it,
    and the size (h, w) of that output.

    Every convolution or pooling with stride s > 1 met before ``layer`` moves output pixel i to input pixel
    s*i + ((k - 1) * d / 2 - padding) at its level. Parallel strided layers at one level (a residual
    block's 3x3 convolution and its 1x1 or 2x2 shortcut) are the main path and a shortcut: the one with the
    largest kernel counts. Stride-1 layers are taken as centred ('same' padding); explicit padding modules
    are not seen.
    """
    calls: list[tuple[tuple[int, int], tuple, tuple, tuple, tuple, bool]] = []
    done: list = []

    def record(module, inputs, _output):
        if done or not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].dim() != 4:
            return
        pair = nn.modules.utils._pair
        stride = pair(module.stride if module.stride is not None else module.kernel_size)
        if max(stride) == 1:
            return
        padding = module.padding if not isinstance(module.padding, str) else 0
        same = type(module).__name__.endswith("Same") or module.padding == "same"
        dilation = pair(getattr(module, "dilation", 1))
        calls.append(
            (tuple(inputs[0].shape[-2:]), pair(module.kernel_size), stride, pair(padding), dilation, same)
        )

    def finish(_module, _inputs, output):
        if not done:
            four_d = isinstance(output, torch.Tensor) and output.dim() == 4
            done.append(tuple(output.shape[-2:]) if four_d else None)

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds)]
    handles.append(layer.register_forward_hook(finish))
    _probe(model, res, handles)
    origin, step = [0.0, 0.0], [1.0, 1.0]  # centre of cell 0 in input pixel indices; cell spacing
    for axis in (0, 1):  # rows (y), columns (x)
        chosen: dict[int, tuple] = {}
        for size, kernel, stride, padding, dilation, same in calls:
            if stride[axis] == 1:
                continue
            level = size[axis]
            if level not in chosen or kernel[axis] > chosen[level][0]:
                pad = (
                    _same_padding(level, kernel[axis], stride[axis], dilation[axis])
                    if same
                    else padding[axis]
                )
                chosen[level] = (kernel[axis], stride[axis], pad, dilation[axis])
        for level in sorted(chosen, reverse=True):  # from the input inwards
            kernel, stride, pad, dilation = chosen[level]
            origin[axis] += step[axis] * ((kernel - 1) * dilation / 2 - pad)
            step[axis] *= stride
    if not done or done[0] is None:
        raise ValueError(f"the target layer {type(layer).__name__} does not return an N x C x H x W tensor")
    return Grid(origin[1] + 0.5, origin[0] + 0.5, step[1], step[0]), done[0]


def align_maps(maps: np.ndarray, grid: Grid, h: int, w: int) -> np.ndarray:
    """Upsampled maps (N x res x res, grad-cam's stretched geometry) moved so that each cell's value sits at
    its true centre; edges are continued (as the bilinear upsampling already does at the borders)."""
    if not len(maps):
        return maps
    height, width = maps.shape[1:]
    stretched = (
        Grid.stretched(width, h, w)
        if height == width
        else Grid(width / w / 2, height / h / 2, width / w, height / h)
    )
    # For an aligned pixel at continuous u, the stretched map's coordinate: u_g = a * u + b (per axis).
    ax, ay = stretched.sx / grid.sx, stretched.sy / grid.sy
    bx, by = stretched.x0 - ax * grid.x0, stretched.y0 - ay * grid.y0
    # cv2 pixel indices are continuous coordinates minus 0.5.
    matrix = np.array([[ax, 0, bx + 0.5 * ax - 0.5], [0, ay, by + 0.5 * ay - 0.5]], np.float64)
    if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
        return maps
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return np.stack(
        [
            cv2.warpAffine(m, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            for m in maps
        ]
    )


class _KeepsRawMaps:
    """Keeps the batch's raw maps (ReLU of the channel sum, before pytorch-grad-cam min-max scales each map
    to [0, 1]): the maximum's height says how strongly the map points."""

    raw_maps: np.ndarray | None = None

    def get_cam_image(self, *args, **kwargs) -> np.ndarray:
        cam = super().get_cam_image(*args, **kwargs)
        self.raw_maps = np.maximum(cam, 0).astype(np.float32)  # what compute_cam_per_layer scales next
        return cam


class RawPeakGradCAM(_KeepsRawMaps, GradCAM):
    """pytorch-grad-cam's GradCAM (the study's method), keeping the raw maps."""


class RawPeakHiResCAM(_KeepsRawMaps, HiResCAM):
    """pytorch-grad-cam's HiResCAM (Draelos & Carin 2020: the element-wise product of gradient and
    activation, summed over channels), keeping the raw maps.

    fastai's head reads the last map through concat pooling: its average half gives every position the
    same gradient, its max half only each channel's maximum. Without the max half HiResCAM's map would be
    Grad-CAM's number for number (tests/test_cam.py); with it the two differ where the maxima are. On an
    earlier stage (cam.min_cells) the gradients vary over the map, Grad-CAM's spatial average of them no
    longer says where the score came from, and HiResCAM's product does."""


METHODS = {"gradcam": RawPeakGradCAM, "hirescam": RawPeakHiResCAM}


@dataclass
class CamMaps:
    maps: np.ndarray  # N x res x res float32, each min-max scaled to [0, 1] by grad-cam (all 0 if constant)
    raw: np.ndarray  # N x h x w float32: the raw map at the feature map's own resolution
    probabilities: np.ndarray  # N: P(cancer) from the same forward pass (a consistency check)


def grad_cam_maps(
    model: nn.Module,
    layer: nn.Module,
    images: np.ndarray,
    batch_size: int,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
    method: str = "gradcam",
) -> CamMaps:
    """Grad-CAM (or HiResCAM: ``method``) maps of the cancer score (PositiveScore) of every image (uint8
    N x res x res), batch by batch.

    fp32, eval mode, no autocast: grad-cam's hooks see exactly the network that made the predictions.
    One PositiveScore per image: the loss is the sum of the images' scores, and since in eval mode images
    do not interact, each image's gradient is its own.

    Memory: Grad-CAM needs the gradient at the target layer only. The weights are frozen and the graph
    starts at the target layer's output (``_graph_from_here``), so nothing before it is kept for a backward
    pass and no gradient reaches the input or any weight: the trunk runs as inference does (at 512 px a
    ResNet-152 batch of 32 needs a few GiB, not ~45). A batch that still does not fit on the GPU is split
    in halves until it does.
    """
    device = torch.device(device)
    model = model.to(device).float().eval()
    n, res = len(images), images.shape[-1] if len(images) else 0
    maps, raws, probabilities = [], [], []
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    start_graph = layer.register_forward_hook(_graph_from_here)  # before grad-cam's hooks: runs first
    cam = METHODS[method](model, [layer])
    try:
        starts = range(0, n, batch_size)
        for start in progress(starts, "grad-cam", total=len(starts), enabled=show_progress):
            batch = np.ascontiguousarray(images[start : start + batch_size])
            for scaled, raw, probability in _fitting(cam, batch, device):
                maps.append(scaled)
                raws.append(raw)
                probabilities.append(probability)
    finally:
        cam.activations_and_grads.release()
        start_graph.remove()
        for p in trainable:
            p.requires_grad_(True)
    if not maps:
        return CamMaps(np.zeros((0, res, res), np.float32), np.zeros((0, 0, 0), np.float32), np.zeros(0))
    return CamMaps(np.concatenate(maps), np.concatenate(raws), np.concatenate(probabilities))


def _graph_from_here(_module, _inputs, output):
    """Forward hook on the target layer: its output becomes the start of the autograd graph (a copy, so
    that in-place operations after the layer stay legal)."""
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and not output.requires_grad:
        return output.detach().requires_grad_(True).clone()
    return None


def _fitting(cam: RawPeakGradCAM | RawPeakHiResCAM, batch: np.ndarray, device: torch.device):
    """(scaled maps, raw maps, probabilities) of ``batch``, in halves (recursively) when CUDA runs out of
    memory."""
    try:
        x = normalize_batch(torch.from_numpy(batch).to(device))
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            cam.raw_maps = None
            scaled = cam(x, targets=[PositiveScore()] * len(batch))
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(batch) // 2
        yield from _fitting(cam, batch[:half], device)
        yield from _fitting(cam, batch[half:], device)
        return
    if cam.raw_maps is None or cam.raw_maps.ndim != 3:
        raise ValueError("grad-cam returned no per-image feature map: the target layer is not N x C x H x W")
    yield (
        scaled.astype(np.float32),
        cam.raw_maps,
        positive_probability(cam.outputs.detach()).cpu().numpy(),
    )


def _probe(model: nn.Module, res: int, handles: list) -> None:
    """One forward pass of a blank image in eval mode, for the forward hooks behind ``handles``; the hooks
    are removed and the model's mode restored afterwards."""
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 1, res, res, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
