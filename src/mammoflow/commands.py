"""Which module defines each `mammoflow` subcommand: the one table the command line dispatches on and the
workflow's code triggers read (mammoflow.plan.code).

A job imports the command line and its own command's module, nothing else of the package at start, so an
edit to one stage's code cannot change (nor re-run) another stage's jobs. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # defines ``register(subparsers)``, which adds the command's parser, and the handler
    handler: str  # the function of ``module`` that runs the command (``register`` binds it as ``func``)
    gpu: bool = False  # puts work on a GPU when there is one: leases a device first (mammoflow.devices)


# In the order `mammoflow --help` lists them.
COMMANDS: dict[str, Command] = {
    "phantom": Command("mammoflow.data_cli", "cmd_phantom"),
    "decode": Command("mammoflow.data_cli", "cmd_decode"),
    "index": Command("mammoflow.data_cli", "cmd_index"),
    "preprocess": Command("mammoflow.data_cli", "cmd_preprocess"),
    "folds": Command("mammoflow.data_cli", "cmd_folds"),
    "train": Command("mammoflow.classify.cli", "cmd_train", gpu=True),
    "gan-stage": Command("mammoflow.gan.cli", "cmd_gan_stage", gpu=True),
    "gan-fid": Command("mammoflow.gan.cli", "cmd_gan_fid", gpu=True),
    "synthesize": Command("mammoflow.gan.cli", "cmd_synthesize", gpu=True),
    "gan": Command("mammoflow.gan.cli", "cmd_gan_generate", gpu=True),  # `mammoflow gan generate`
    "cam": Command("mammoflow.explain.cli", "cmd_cam", gpu=True),
    "report": Command("mammoflow.report.cli", "cmd_report"),
    "weights": Command("mammoflow.weights.cli", "cmd_weights"),
    "test-layout": Command("mammoflow.predict.cli", "cmd_test_layout"),
    "predict": Command("mammoflow.predict.cli", "cmd_predict", gpu=True),
}

# The subcommands that lease a GPU (the rules with resources gpu=1), and the module that leases it: the
# command line imports it for those commands only, so that no other job loads it.
GPU_COMMANDS = frozenset(name for name, command in COMMANDS.items() if command.gpu)
LEASE_MODULE = "mammoflow.devices"
