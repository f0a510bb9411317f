"""genloom: one PostgreSQL + pgvector database as the single source of truth for generative-AI work."""

__version__ = "0.1.0"
