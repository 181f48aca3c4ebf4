"""Metrics: the numbers a record holds, computed from predictions and ground truth.

`classification` (top-k, mean per-class accuracy, bootstrap intervals), `segmentation` (the one confusion
matrix and mIoU of the project), `discovery` (CorLoc, saliency scores).
"""
