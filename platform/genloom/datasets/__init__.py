"""Versioned datasets: content-addressed items, numbered sealed versions, import/export, streaming.

The library lives in `items.py` (content-addressed items), `versions.py` (datasets, versions,
membership), `loading.py` (streaming into tensors, with `shards.py` and `prefetch.py`),
`importers.py` (digits, mnist, images, text, collection) and `export.py`.
"""
