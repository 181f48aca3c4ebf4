"""Probes: learners and evaluators that run on cached features only (never on a model).

`knn` (DINO's weighted kNN), `linear` (logistic regression with a regularisation sweep, plain or MAE-style
with BatchNorm), `attentive` (CAE's cross-attention probe), `metrics` (top-k, mean per-class accuracy and
bootstrap intervals) and `split` (the validation split carved from the training split).
"""
