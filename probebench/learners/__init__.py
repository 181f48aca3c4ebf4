"""Learners: what a probe trains and applies on cached features (never on a model).

`knn` (DINO's weighted kNN), `linear` (logistic regression with a regularisation sweep, plain or MAE-style
with BatchNorm), `attentive` (CAE's cross-attention probe), `seghead` (a linear segmentation head on patch
grids), `retrieval` (nearest neighbours between sets) and `split` (the validation split carved from the
training split). Scores live in `probebench.metrics`.
"""
