"""The feature cache, behind its own API: nothing outside this package reads an entry's `key.json` or
indexes its manifest.

`store.FeatureStore` is one entry (its key's parts, the encoder's facts, checksummed shards, array names made
by `store.array_name`); `entries` finds the entry for a request, or a wider one that already holds it, and
lists and removes entries; `read` is what probes read back: image features, token grids, labelled rows.
"""
