"""Each learner's protocol defaults (the papers' and their code's values), in a module that imports no
torch: probes make their knobs' defaults from these, read when a knob list is made (so a changed value
changes every config hash it enters), and the task catalogue reads them without building anything."""

from __future__ import annotations

# kNN: DINO's eval_knn.py
KNN_KS = (10, 20, 100, 200)
KNN_TEMPERATURE = 0.07

# linear: L2-regularised logistic regression, C swept on a validation split (Zhu et al.'s protocol)
LINEAR_C_GRID_SPEC = (-6.0, 5.0, 45)  # log10 of the first and last C, and the number of grid points
LINEAR_VARIANTS = ("plain", "bn")
LINEAR_BN_EPS = 1e-6
LINEAR_MAX_ITER = 1000
LINEAR_TOL = 1e-4  # on the largest absolute gradient entry, as scikit-learn's lbfgs uses `tol`

# attentive: CAE's object-level attentive probing, lr 0.4 at batch 8192 (256 x 32 GPUs), 90 epochs, 10 warm-up
ATTENTIVE_BASE_LR = 0.4 * 256 / 8192  # per 256 images
ATTENTIVE_EPOCHS = 90
ATTENTIVE_WARMUP_EPOCHS = 10
ATTENTIVE_BATCH_SIZE = 256
ATTENTIVE_HEAD_DIM = 64

# segmentation head: the mmseg configs, AdamW lr 4e-4, weight decay 0.05, 1500 warm-up iterations (ratio
# 1e-6), 160k iterations, batch 16
SEGHEAD_LR = 4e-4
SEGHEAD_WEIGHT_DECAY = 0.05
SEGHEAD_WARMUP_ITERS = 1500
SEGHEAD_WARMUP_RATIO = 1e-6
SEGHEAD_ITERATIONS = 160_000
SEGHEAD_BATCH_SIZE = 16

# the validation split carved from the training split
VAL_FRACTION = 0.2
