"""Extraction: frozen features of an encoder on a dataset, computed once into the cache.

`request` says what to compute (`FeatureRequest`) and how (`ExtractionOptions`); `extract.extract_features`
fills the cache entry (`probebench.cache`) shard by shard; `distributed` splits the shards between torchrun
processes.
"""
