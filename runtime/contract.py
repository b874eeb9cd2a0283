"""The stage contract: the two graphs every model is split into, their tensors and their axes.

This is the only place that names a stage, a tensor or an axis. Export writes graphs with
these names, runners feed them, TensorRT profiles give them shape ranges, calibration and
the Polygraphy data loader build feeds for them: all read the names from here, so a change
to the contract is one edit, and a graph that does not follow it is refused by name.

``backbone(lr, scale) -> features`` runs at LR resolution; ``upsampler(features, scale, rows,
cols) -> rgb`` renders the output pixels whose LR-pixel coordinates ``rows`` and ``cols`` the
host computed (``asisr.runtime.query``), so no output size is ever a float inside a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Axis names. Dynamic axes are named; ``CHANNELS`` is named for readability but fixed by the model.
BATCH, CHANNELS = "batch", "channels"
LR_HEIGHT, LR_WIDTH = "lr_height", "lr_width"
OUT_HEIGHT, OUT_WIDTH = "out_height", "out_width"
STATIC_AXES = frozenset({CHANNELS})

# Tensor names.
LR, SCALE, FEATURES, ROWS, COLS, RGB = "lr", "scale", "features", "rows", "cols", "rgb"

Axis = str | int


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, axes (named = dynamic or model-fixed, int = fixed), dtype."""

    name: str
    axes: tuple[Axis, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.axes)

    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> name, for the axes whose size varies between calls."""
        return {i: a for i, a in enumerate(self.axes) if isinstance(a, str) and a not in STATIC_AXES}

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """A concrete shape: named axes looked up in ``sizes``, fixed ones as they are."""
        return tuple(int(sizes[a]) if isinstance(a, str) else int(a) for a in self.axes)


@dataclass(frozen=True)
class StageSpec:
    """One of the two graphs: its name (also its file stem) and its tensors in argument order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no input {name!r}")

    def axes(self) -> dict[str, tuple[Axis, ...]]:
        """Input and output name -> axes (the manifest's record of the graph's signature)."""
        return {t.name: t.axes for t in (*self.inputs, *self.outputs)}

    def check_names(self, inputs: list[str], outputs: list[str], what: str) -> str | None:
        """Why a graph with these input/output names does not implement this stage; None if it does."""
        if sorted(inputs) != sorted(self.input_names) or sorted(outputs) != sorted(self.output_names):
            return (f"{what} has inputs {inputs} and outputs {outputs}; the {self.name} stage has inputs "
                    f"{list(self.input_names)} and outputs {list(self.output_names)}")
        return None


BACKBONE = StageSpec(
    "backbone",
    inputs=(TensorSpec(LR, (BATCH, 3, LR_HEIGHT, LR_WIDTH)), TensorSpec(SCALE, (BATCH, 2))),
    outputs=(TensorSpec(FEATURES, (BATCH, CHANNELS, LR_HEIGHT, LR_WIDTH)),),
)
UPSAMPLER = StageSpec(
    "upsampler",
    inputs=(TensorSpec(FEATURES, (BATCH, CHANNELS, LR_HEIGHT, LR_WIDTH)), TensorSpec(SCALE, (BATCH, 2)),
            TensorSpec(ROWS, (BATCH, OUT_HEIGHT)), TensorSpec(COLS, (BATCH, OUT_WIDTH))),
    outputs=(TensorSpec(RGB, (BATCH, 3, OUT_HEIGHT, OUT_WIDTH)),),
)
STAGES: tuple[StageSpec, ...] = (BACKBONE, UPSAMPLER)  # in data-flow order
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# A whole model's call (``SRModel.forward``): the backbone's inputs, then the upsampler's query.
MODEL_INPUTS: tuple[str, ...] = BACKBONE.input_names + tuple(
    n for n in UPSAMPLER.input_names if n not in BACKBONE.input_names + BACKBONE.output_names)


def stage(name: str) -> StageSpec:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def backbone_feeds(lr: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    return {LR: lr, SCALE: scale}


def upsampler_feeds(features: np.ndarray, scale: np.ndarray, rows: np.ndarray,
                    cols: np.ndarray) -> dict[str, np.ndarray]:
    return {FEATURES: features, SCALE: scale, ROWS: rows, COLS: cols}
