"""The cell's recipe against fastai's own: the same timm model built by fastai's ``vision_learner`` and by
mammoflow, compared module for module, parameter group for parameter group, loss for loss, and every step's
learning rate and momentum per group over a whole ``fine_tune`` and a whole ``fit_one_cycle``.

fastai is a test dependency only (pyproject's `test` extra); it is imported here and nowhere else.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

fastai_vision = pytest.importorskip(
    "fastai.vision.all", reason="fastai is the reference (pip install .[test])"
)

from mammoflow.classify.models import PAPER_MODELS, ConcatPool2d, build_model, positive_probability  # noqa: E402
from mammoflow.classify.optimizer import Groups, set_hypers  # noqa: E402
from mammoflow.classify.train import Trainer, TrainSettings  # noqa: E402

warnings.filterwarnings("ignore", module="fastai")
RES, BATCH, TRAIN, VALID = 32, 8, 24, 8  # 3 steps per epoch
RELATIVE = 1e-9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread is faster than two fighting over shared cores (and leaves the second core
    to the other worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dls():
    """fastai DataLoaders of 1-channel RES x RES tensors, two classes (Categorize: fastai picks its loss)."""
    from fastai.vision.all import Categorize, Datasets, TensorImage

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((TRAIN + VALID, 1, RES, RES)).astype(np.float32))
    y = np.arange(TRAIN + VALID) % 2
    tfms = [[lambda i: TensorImage(x[i])], [lambda i: int(y[i]), Categorize(vocab=[0, 1])]]
    splits = [list(range(TRAIN)), list(range(TRAIN, TRAIN + VALID))]
    dsets = Datasets(list(range(TRAIN + VALID)), tfms=tfms, splits=splits)
    return dsets.dataloaders(bs=BATCH, device="cpu", num_workers=0)


def _size(name: str) -> dict:
    return {"img_size": RES} if name.startswith("maxvit") else {}


def _learner(name: str, weights=None, tag: str = ""):
    """fastai's vision_learner for the timm name, seeded as mammoflow's model is."""
    torch.manual_seed(0)
    extra = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights else {}
    learn = fastai_vision.vision_learner(
        _dls(), tag or name, n_in=1, pretrained=weights is not None, **extra, **_size(name)
    )
    learn.recorder.silent = True
    learn.remove_cb(fastai_vision.ProgressCallback)
    return learn


def _mine(name: str, weights=None, tag: str = ""):
    torch.manual_seed(0)
    return build_model(name, RES, weights, tag)[0]


def _ours(fastai_name: str) -> str:
    """fastai's parameter name in mammoflow's model: Sequential(TimmBody, head) -> body, head."""
    if fastai_name.startswith("0.model."):
        return "body." + fastai_name.removeprefix("0.model.")
    return "head." + fastai_name.removeprefix("1.")


def _names(model: nn.Module, params) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """Pretrained weights in timm's hub format (safetensors of the 3-channel, 1000-class network), random:
    no hub can be reached here."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    state = timm.create_model("resnet18.tv_in1k", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_model_and_parameter_groups_are_fastais(name):
    learn, mine = _learner(name), _mine(name)
    theirs = list(learn.model[1].children())
    ours = list(mine.head.children())
    assert len(theirs) == len(ours) == 9
    for a, b in zip(theirs, ours, strict=True):
        expected = {"AdaptiveConcatPool2d": ConcatPool2d, "Flatten": nn.Flatten}.get(
            type(a).__name__, type(a)
        )
        assert type(b) is expected, (a, b)
        for attr in ("p", "in_features", "out_features", "num_features", "eps", "momentum", "inplace"):
            assert getattr(a, attr, None) == getattr(b, attr, None), (attr, a, b)
        assert (getattr(a, "bias", None) is None) == (getattr(b, "bias", None) is None)
    # Seeded alike, the two are the same network weight for weight (fastai's head initialisation included).
    state = {_ours(k): v for k, v in learn.model.state_dict().items()}
    assert state.keys() == mine.state_dict().keys()
    for key, value in mine.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(4, 1, RES, RES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(mine.eval()(x), learn.model.eval()(x), rtol=1e-5, atol=1e-6)
    _check_groups(learn, mine)


def _check_groups(learn, mine) -> None:
    """fastai's parameter groups (default_split), its no-decay set (wd_bn_bias=False) and what trains when
    frozen (train_bn=True), against the cell's."""
    learn.create_opt()
    groups = Groups.of(mine)
    theirs = [[_ours(n) for n in _names(learn.model, p)] for p in learn.opt.param_lists]
    assert theirs == [_names(mine, p) for p in groups.params]
    no_decay = {
        _ours(n) for n, p in learn.model.named_parameters() if not learn.opt.state[p].get("do_wd", True)
    }
    by_id = {id(p): n for n, p in mine.named_parameters()}
    assert no_decay == {by_id[i] for i in groups.no_decay} and no_decay
    learn.freeze()
    groups.freeze(True)
    trainable = {_ours(n) for n, p in learn.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in mine.named_parameters() if p.requires_grad}
    assert any(n.startswith("body.") for n in trainable)  # train_bn: the body's norm layers train frozen
    learn.unfreeze()
    groups.freeze(False)
    assert all(p.requires_grad for p in mine.parameters())


def test_loss_and_probability_are_fastais():
    learn = _learner("resnet18")
    assert type(learn.loss_func).__name__ == "CrossEntropyLossFlat"
    trainer = Trainer(_mine("resnet18"), TrainSettings.configured(pretrained=False), torch.device("cpu"), 1)
    logits = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    target = torch.arange(16) % 2
    assert float(trainer.loss(logits, target)) == pytest.approx(
        float(learn.loss_func(logits, target)), rel=1e-7
    )
    torch.testing.assert_close(positive_probability(logits), learn.loss_func.activation(logits)[:, 1])


class _Record(fastai_vision.Callback):
    """Every step's rate and momentum per group, and what trains in each fit (fastai's side)."""

    order = 70  # after ParamScheduler (60) has set the step's values

    def __init__(self):
        self.steps, self.trainable = [], []

    def before_fit(self):
        self.trainable.append({_ours(n) for n, p in self.learn.model.named_parameters() if p.requires_grad})

    def before_step(self):
        self.steps.append(([h["lr"] for h in self.opt.hypers], [h["mom"] for h in self.opt.hypers]))


def _our_steps(recipe: str, pretrained: bool, weights, epochs: int, lr: float):
    model = _mine("resnet18", weights, "resnet18.tv_in1k" if weights else "")
    settings = TrainSettings.configured(
        epochs=epochs, lr=lr, recipe=recipe, pretrained=pretrained, precision="fp32"
    )
    trainer = Trainer(
        model, settings, torch.device("cpu"), steps_per_epoch=TRAIN // BATCH, pretrained=pretrained
    )
    rng = np.random.default_rng(4)
    trainable, phase = [], -1
    for epoch in range(trainer.epochs):
        trainer.start_epoch(epoch)
        if trainer.phase_index != phase:
            phase = trainer.phase_index
            trainable.append({n for n, p in model.named_parameters() if p.requires_grad})
        for _ in range(trainer.steps_per_epoch):
            images = rng.integers(0, 255, (BATCH, RES, RES), dtype=np.uint8)
            trainer.train_step(
                trainer._inputs(images), torch.from_numpy((np.arange(BATCH) % 2).astype(np.float32))
            )
    return trainer, trainable


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize(
    ("recipe", "pretrained"), [("fine_tune", True), ("fit_one_cycle", True), ("fit_one_cycle", False)]
)
def test_every_steps_rate_and_momentum_are_fastais(recipe, pretrained, resnet18_file):
    epochs, lr = 2, 1e-3
    weights = resnet18_file if pretrained else None
    learn = _learner("resnet18", weights, "resnet18.tv_in1k" if weights else "")
    record = _Record()
    if recipe == "fine_tune":
        learn.fine_tune(epochs, lr, cbs=record)
    else:
        learn.fit_one_cycle(epochs, lr, cbs=record)
    trainer, trainable = _our_steps(recipe, pretrained, weights, epochs, lr)
    assert len(learn.dls.train) == trainer.steps_per_epoch
    assert len(trainer.applied) == len(record.steps) == trainer.epochs * trainer.steps_per_epoch
    for (_, rates, mom), (their_rates, their_moms) in zip(trainer.applied, record.steps, strict=True):
        assert _relative(rates, their_rates) <= RELATIVE, (rates, their_rates)
        assert _relative([mom, mom], their_moms) <= RELATIVE, (mom, their_moms)
    assert trainable == record.trainable  # frozen (train_bn) and unfrozen as fastai's fits were
    frozen = pretrained or recipe == "fine_tune"
    assert trainer.phases[0].frozen is frozen
    if recipe == "fine_tune":  # the discriminative rates of the unfrozen phase: lr/200 and lr/2 at the peak
        assert trainer.phases[1].lr_max == pytest.approx((lr / 200, lr / 2), rel=1e-12)


def test_pretrained_body_is_loaded_as_fastai_loads_it(resnet18_file):
    learn = _learner("resnet18", resnet18_file, "resnet18.tv_in1k")
    mine = _mine("resnet18", resnet18_file, "resnet18.tv_in1k")
    for key, value in learn.model.state_dict().items():
        assert torch.equal(value, mine.state_dict()[_ours(key)]), key
    from safetensors.torch import load_file

    rgb = load_file(str(resnet18_file))["conv1.weight"]  # one channel: the RGB kernels summed, as fastai's
    torch.testing.assert_close(mine.body.conv1.weight, rgb.sum(dim=1, keepdim=True))


def test_fused_adamw_steps_as_fastais_adam():
    """fastai's Adam (its own optimizer, do_wd off for norm and bias) and the cell's fused AdamW groups, fed
    the same gradients, rates per group and changing momentum, end at the same weights (float32 rounding)."""
    learn = _learner("resnet18")
    learn.create_opt()
    mine = copy.deepcopy(learn.model)
    groups = Groups(
        [list(mine[0].parameters()), list(mine[1].parameters())],
        {id(q) for p, q in zip(learn.model.parameters(), mine.parameters(), strict=True)
         if not learn.opt.state[p].get("do_wd", True)},
        set(),
    )  # fmt: skip
    optimizer = groups.optimizer(0.01, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in learn.model.named_parameters()}
    generator = torch.Generator().manual_seed(5)
    for step in range(6):
        rates, mom = (1e-3 * (step + 1), 1e-2 * (step + 1)), 0.95 - 0.02 * step
        for p, q in zip(learn.model.parameters(), mine.parameters(), strict=True):
            grad = torch.randn(p.shape, generator=generator)
            p.grad, q.grad = grad.clone(), grad.clone()
        learn.opt.set_hyper("lr", list(rates))
        learn.opt.set_hyper("mom", mom)
        learn.opt.step()
        set_hypers(optimizer, rates, mom)
        optimizer.step()
    for (name, p), q in zip(learn.model.named_parameters(), mine.parameters(), strict=True):
        assert float((p.detach() - before[name]).abs().max()) > 1e-4, name  # every weight took its steps
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
