"""Scale-out: a study as a grid of (encoder, dataset) jobs run through submitit (Slurm or local processes).

grid.py plans the jobs and holds the body each job runs; submit.py submits them; status.py reads their
state back from the job folders and the records.
"""
