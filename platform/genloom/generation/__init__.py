"""Retrieval-grounded generation: backends, templates, context assembly, the logged call.

from genloom.generation.call import CallRequest, ask
with session_scope() as s:
    result = ask(s, CallRequest(question="What is BM25?", collection="demo"))
"""
