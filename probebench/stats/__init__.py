"""Answers, not only numbers: statistics over the per-item outcomes kept beside every record.

- `items`: what each test item contributed to a record's metrics, and how each metric is made from them;
- `bootstrap`: the paired bootstrap over shared items (and training seeds), intervals, p-values, Holm;
- `entrants`: the records of an encoder under one setting, their items read, checked and aligned;
- `compare`: `probebench compare A B`, task by task;
- `ranks`: ranks with ties per task, and rank intervals;
- `claims`: the papers' claims (`results/claims.yaml`) judged by a hierarchical bootstrap.
"""
