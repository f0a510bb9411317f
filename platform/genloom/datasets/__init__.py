"""Versioned datasets: content-addressed items, numbered sealed versions, import/export, streaming.

The library lives in `store.py` (items, versions, membership, streaming into tensors),
`importers.py` (digits, mnist, images, text, collection) and `export.py`.
"""
