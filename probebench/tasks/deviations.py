"""Each deliberate deviation from the papers' protocols, by id: a record lists the ids that apply to its
number (`ResultRecord.deviations`), the report prints these sentences, and docs/protocols.md explains each
(a test keeps the three in step)."""

from __future__ import annotations

DEVIATIONS: dict[str, str] = {
    "linear-no-augmentation": (
        "linear probes: logistic regression with a C sweep (L-BFGS) on cached features of unaugmented "
        "images, where MAE trains its BatchNorm + linear head with LARS for 90 epochs on augmented images"
    ),
    "attentive-no-augmentation": (
        "attentive probe: trained on cached features of unaugmented images (CAE trains it on "
        "random-resized crops)"
    ),
    "attentive-epoch-on-val": (
        "attentive probe: the epoch is chosen on a validation split carved from train; the part-aware "
        "study's script reports the best test accuracy over epochs"
    ),
    "segmentation-no-augmentation": (
        "linear segmentation: no training augmentation (random rescale, crop, flip, photometric): "
        "features are frozen and cached once, so the training crops are the sliding windows of the test "
        "layout"
    ),
    "segmentation-fp32": "linear segmentation: fp32 instead of AMP",
    "segmentation-loss-labelled-pixels": (
        "linear segmentation: loss averaged over labelled pixels (mmseg divides by all pixels: a constant"
        " factor)"
    ),
    "found-no-bilateral-solver": (
        "FOUND: no bilateral solver (no maintained implementation installs here): its refinement of the "
        "coarse and the self-training targets is the identity"
    ),
    "found-no-augmentation": (
        "FOUND: no training augmentation (random scaling, 224 px crops, Gaussian blur): cached keys at "
        "each image's own size"
    ),
    "saliency-padded": (
        "saliency: each method's whole mask (FOUND's 'multi' map) on images zero-padded to a multiple of "
        "the patch; TokenCut's saliency script resizes them to a multiple of the patch instead"
    ),
    "dense-retrieval-no-augmentation": (
        "in-context dense retrieval: the memory holds one unaugmented pass over the training images (cached "
        "features); open-hummingbird-eval fills it with 2 augmented passes"
    ),
    "dense-retrieval-scored-at-image-size": (
        "in-context dense retrieval: predictions upsampled to each image's own size and scored against its "
        "labels as stored, without Hungarian matching of predicted classes; open-hummingbird-eval scores at "
        "the input size against resized labels through PredsmIoU's matching"
    ),
}


def deviation_text(deviation: str) -> str:
    """The sentence of a deviation id; an id this probebench does not know (a record from a probe
    registered elsewhere) is shown as itself."""
    return DEVIATIONS.get(deviation, deviation)
