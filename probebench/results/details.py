"""What each probe chose and how it got there (`ResultRecord.probe`), one typed model per shipped probe.

The record holds the numbers a reader checks (the C grid and the chosen C with its validation curve, the
chosen epoch, loss curves, window and crop counts, each trained discovery method's settings and losses).
What every run of a protocol does the same way (the objective, the optimiser, the selection rule) is
documentation: docs/protocols.md, keyed by the task's protocol version.

The model is picked by the details' `probe` field; a probe registered outside probebench records its own
details as `OtherDetails`, typed as JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    JsonValue,
    StrictBool,
    StrictInt,
    Tag,
    model_validator,
)
from pydantic_core import to_jsonable_python


class _Details(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnnDetails(_Details):
    probe: Literal["knn"]
    n_train: StrictInt


class CPoint(_Details):
    """One point of the linear probe's C sweep, fitted on the fit split and scored on val."""

    index: StrictInt
    c: float
    val_top1: float
    val_loss: float
    iterations: StrictInt
    converged: StrictBool


class LinearDetails(_Details):
    probe: Literal["linear"]
    variant: Literal["plain", "bn"]
    c_grid: list[float]
    chosen_c: float
    chosen_index: StrictInt
    val_curve: list[CPoint]
    val_fraction: float
    n_fit: StrictInt
    n_val: StrictInt
    refit_iterations: StrictInt  # the refit on train + val at the chosen C
    all_converged: StrictBool
    max_iter: StrictInt
    tol: float
    sweep_s: float
    total_s: float
    n_train: StrictInt


class AttentiveDetails(_Details):
    probe: Literal["attentive"]
    variant: Literal["cae"]
    heads: StrictInt
    epochs: StrictInt
    warmup_epochs: StrictInt
    batch_size: StrictInt
    lr: float
    base_lr_per_256: float
    chosen_epoch: StrictInt  # 1-based, chosen on val carved from train
    val_curve: list[float]  # val top-1 after each epoch
    val_fraction: float
    n_fit: StrictInt
    n_val: StrictInt
    total_s: float
    n_train: StrictInt


class WindowCounts(_Details):
    train: StrictInt
    test: StrictInt


class SegmentationDetails(_Details):
    probe: Literal["linear segmentation"]
    iterations: StrictInt
    batch_size: StrictInt
    lr: float
    weight_decay: float
    warmup_iters: StrictInt
    loss_curve: list[float]
    train_s: float
    layers: list[StrictInt]  # the blocks whose patch grids the head concatenates
    channels: list[StrictInt]
    num_classes: StrictInt
    windows: WindowCounts
    epochs: float  # iterations x batch / training windows


class RetrievalDetails(_Details):
    probe: Literal["part_retrieval"]
    feature: Literal["encoded", "projected", "cls"]
    n_crops: StrictInt


class TrainedMethod(_Details):
    """A trained discovery method's settings (`HeapConfig`, `FoundConfig`), losses and size."""

    config: dict[str, JsonValue]
    loss_first: float | dict[str, float] | None = None  # HEAP: per loss term, with the total
    loss_last: float | dict[str, float] | None = None
    curve: list[float] = []
    steps: StrictInt | None = None
    iterations: StrictInt | None = None  # 0: the untrained control
    parameters: StrictInt


class GroundTruth(_Details):
    boxes: str
    exclude_hard: StrictBool


class DiscoveryDetails(_Details):
    probe: Literal["object discovery"]
    train_images: StrictInt
    methods: list[str]
    skipped_methods: dict[str, str]  # method -> why this encoder cannot run it
    trained: dict[str, TrainedMethod]  # HEAP, its ablations and FOUND
    # what stood in for keys: the last block's, or the patch tokens of the block `knobs.layer` names
    keys: Literal["keys", "patch tokens"]
    attention: StrictBool  # class-token attention of the last block was read
    dinoseg_head: StrictInt | None
    ground_truth: GroundTruth


class NotFitted(_Details):
    """No learner ran: the data cannot define the metrics (`ResultRecord.undefined` says why)."""

    probe: Literal["not fitted"]
    n_train: StrictInt | None = None


class OtherDetails(BaseModel):
    """A probe registered outside probebench: its details as JSON."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, JsonValue]

    probe: str = ""

    @model_validator(mode="before")
    @classmethod
    def _as_json(cls, value: object) -> object:
        return to_jsonable_python(value)  # tuples become lists, as in the file


SHIPPED = {
    m.model_fields["probe"].annotation.__args__[0]: m
    for m in (
        KnnDetails,
        LinearDetails,
        AttentiveDetails,
        SegmentationDetails,
        RetrievalDetails,
        DiscoveryDetails,
        NotFitted,
    )
}


def _kind(value: object) -> str:
    probe = value.get("probe") if isinstance(value, dict) else getattr(value, "probe", None)
    return probe if probe in SHIPPED else "other"


ProbeDetails = Annotated[
    Annotated[KnnDetails, Tag("knn")]
    | Annotated[LinearDetails, Tag("linear")]
    | Annotated[AttentiveDetails, Tag("attentive")]
    | Annotated[SegmentationDetails, Tag("linear segmentation")]
    | Annotated[RetrievalDetails, Tag("part_retrieval")]
    | Annotated[DiscoveryDetails, Tag("object discovery")]
    | Annotated[NotFitted, Tag("not fitted")]
    | Annotated[OtherDetails, Tag("other")],
    Discriminator(_kind),
]
