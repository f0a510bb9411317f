"""Schema v1: every table genloom writes, as typed SQLAlchemy 2.0 models.

The Alembic migrations in `migrations/versions/` create these tables; the models are
how Python code reads and writes them. Database-side rules that SQLAlchemy cannot
express (immutability triggers, the per-model HNSW indexes) live in the migrations.

Every table the migrations create is here, with its columns and indexes, and
tests/test_schema.py compares these models with a freshly migrated database, so the two
cannot drift: a migration that adds a column adds it here too.

Groups, following the data flow:
- retrieval store: collections → documents (versioned) → chunks → embeddings; the BM25 index
  tables (retrieval_chunks, retrieval_postings, retrieval_*_stats) derived from them
- generation log: sessions → prompts → generations → generation_sources, feedback; prompt_templates
- data: items (content-addressed) ∈ dataset_versions (of datasets) via dataset_members
- work: runs → metrics, models (the registry), run_checkpoints
- access: api_keys, audit_log (append-only), pii_findings

Partitions (migration 0023): generations, generation_sources, feedback and metrics are
partitioned by month (genloom.db.partitions makes the partitions). The models are the parent
tables; their primary keys include the partition key, as PostgreSQL requires, and rows that point
at a generation carry its created_at (generation_created_at) for the composite foreign key. The
ORM still identifies a generation, feedback row or metric by its id (`__mapper_args__`), so
`session.get(Generation, id)` works.

Tenants (migration 0013): every tenant-scoped table has `tenant text NOT NULL DEFAULT
genloom_tenant()` and a row-level security policy `tenant = genloom_tenant()`; Python never sets
the column, the default fills it from the transaction's tenant (genloom.db.tenancy). Names that
were unique are unique per tenant (`uq_<table>_tenant_...` indexes).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Optional

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, INT4RANGE, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Shared column shapes.
intpk = Annotated[int, mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)]
created_at = Annotated[
    dt.datetime,
    mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
]
jsonb = Annotated[dict[str, Any], mapped_column(JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False)]
# The owning tenant: filled by the database from the transaction's tenant, never set by Python.
tenant_column = Annotated[str, mapped_column(sa.Text, server_default=sa.text("genloom_tenant()"), nullable=False)]

RUN_KINDS = ("ingest", "train", "sample", "evaluate", "dedup", "generate", "import", "score", "manage")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
ITEM_MODALITIES = ("text", "image", "tensor")
KEY_ROLES = ("reader", "writer", "admin")
PII_MODES = ("off", "mask", "hash", "encrypt")  # a collection's default (collections.pii_mode)
PII_FINDING_MODES = ("mask", "hash", "encrypt", "detect")
ITEM_ORIGINS = ("real", "synthetic", "augmented")
SPLITS = ("train", "val", "test")
# What a dedup decision records: the methods a user picks (genloom.dedup.METHODS), with
# `exact` split into byte-identical (`exact`) and normalised-content (`normalized`) matches.
# The CHECK constraints below are built from this list (migration 0011 pins the same values).
DEDUP_DECISION_METHODS = ("exact", "normalized", "minhash", "semantic")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {
        dt.datetime: sa.DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


# --------------------------------------------------------------------------- retrieval store


class EmbeddingModel(Base):
    """A sentence-embedding model; each gets its own partial HNSW index on embeddings."""

    __tablename__ = "embedding_models"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    dim: Mapped[int] = mapped_column(sa.Integer)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (
        sa.Index("uq_collections_tenant_name", "tenant", "name", unique=True),
        sa.CheckConstraint(_in("pii_mode", PII_MODES), name="collections_pii_mode_check"),
        sa.CheckConstraint("rerank_depth IS NULL OR rerank_depth > 0", name="ck_collections_rerank_depth"),
    )

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text)
    # Postgres text-search configuration used for BM25 lexemes (e.g. 'english', 'simple').
    text_search_config: Mapped[str] = mapped_column(sa.Text, server_default="english")
    embedding_model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("embedding_models.id"))
    # The default reranker of search and ask (`genloom collections set --reranker`), and its depth.
    reranker_model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"))
    rerank_depth: Mapped[Optional[int]] = mapped_column(sa.Integer)
    # The default answerer of ask when no --model is given: a trained span reader (0028).
    reader_model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"))
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]
    # What ingest does with PII by default (genloom.pii); NULL: no PII handling (0013).
    pii_mode: Mapped[Optional[str]] = mapped_column(sa.Text)


class Document(Base):
    """One version of a source document; a changed re-ingest adds a version and supersedes the old one."""

    __tablename__ = "documents"
    __table_args__ = (
        sa.UniqueConstraint("collection_id", "external_id", "version"),
        # At most one current version per external id.
        sa.Index(
            "uq_documents_current",
            "collection_id",
            "external_id",
            unique=True,
            postgresql_where=sa.text("superseded_at IS NULL"),
        ),
        sa.Index("ix_documents_sha256", "collection_id", "sha256"),
        sa.Index("ix_documents_metadata", "metadata", postgresql_using="gin"),
        # At most one interrupted (incomplete) large document per external id: the one to resume.
        sa.Index(
            "uq_documents_incomplete",
            "collection_id",
            "external_id",
            unique=True,
            postgresql_where=sa.text("incomplete"),
        ),
    )

    id: Mapped[intpk]
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("collections.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.Integer, server_default="1")
    uri: Mapped[Optional[str]] = mapped_column(sa.Text)
    title: Mapped[Optional[str]] = mapped_column(sa.Text)
    mime_type: Mapped[Optional[str]] = mapped_column(sa.Text)
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    superseded_at: Mapped[Optional[dt.datetime]]
    # Retired (file gone under --sync, or `documents delete`): superseded_at is set too, so it is
    # out of search and BM25, but its rows stay for the generations that cited it.
    retired_at: Mapped[Optional[dt.datetime]]
    retired_by_run_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"))
    # Keys set by `documents set-meta` (already merged into metadata); new versions inherit them.
    user_metadata: Mapped[jsonb]
    # A large document being written slice by slice (ingest's _write_streamed): superseded_at is
    # set too, so nothing searches it; an interrupted ingest is resumed from its chunks (0015).
    incomplete: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    tenant: Mapped[tenant_column]

    chunks: Mapped[list[Chunk]] = relationship(back_populates="document", order_by="Chunk.ordinal")


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (sa.UniqueConstraint("document_id", "ordinal"),)

    id: Mapped[intpk]
    document_id: Mapped[int] = mapped_column(sa.ForeignKey("documents.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(sa.Integer)
    text: Mapped[str] = mapped_column(sa.Text)
    token_count: Mapped[int] = mapped_column(sa.Integer)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]

    document: Mapped[Document] = relationship(back_populates="chunks")


class Embedding(Base):
    """A chunk's vector under one embedding model. The column has no fixed dimension so
    several models can share the table; each model's HNSW index is a partial expression
    index `((embedding::vector(dim)) vector_cosine_ops) WHERE embedding_model_id = id`."""

    __tablename__ = "embeddings"

    chunk_id: Mapped[int] = mapped_column(sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    embedding_model_id: Mapped[int] = mapped_column(sa.ForeignKey("embedding_models.id"), primary_key=True)
    embedding: Mapped[Any] = mapped_column(Vector())
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class RetrievalChunk(Base):
    """BM25's view of a chunk: its length (lexeme occurrences) and whether its document version is
    current. Derived from chunks by genloom.retrieval.bm25; not tenant-scoped (reached only through
    chunk ids read under a policy), hidden from `genloom sql` instead."""

    __tablename__ = "retrieval_chunks"
    __table_args__ = (
        sa.Index("ix_retrieval_chunks_document", "document_id"),
        sa.Index("ix_retrieval_chunks_current", "collection_id", "chunk_id", postgresql_where=sa.text("current")),
    )

    chunk_id: Mapped[int] = mapped_column(sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("collections.id", ondelete="CASCADE"))
    document_id: Mapped[int] = mapped_column(sa.ForeignKey("documents.id", ondelete="CASCADE"))
    length: Mapped[int] = mapped_column(sa.Integer)
    current: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true())


class RetrievalPosting(Base):
    """(term, chunk) → term frequency, with the chunk length copied in so BM25 scoring is one
    index-only scan of ix_retrieval_postings_current, with no join."""

    __tablename__ = "retrieval_postings"
    __table_args__ = (
        sa.Index(
            "ix_retrieval_postings_current",
            "collection_id",
            "term",
            postgresql_include=["chunk_id", "tf", "chunk_length"],
            postgresql_where=sa.text("current"),
        ),
    )

    chunk_id: Mapped[int] = mapped_column(sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    term: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("collections.id", ondelete="CASCADE"))
    tf: Mapped[int] = mapped_column(sa.Integer)
    chunk_length: Mapped[int] = mapped_column(sa.Integer)
    current: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true())


class RetrievalTermStats(Base):
    """Document frequency of each term over a collection's current chunks."""

    __tablename__ = "retrieval_term_stats"

    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    term: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    df: Mapped[int] = mapped_column(sa.BigInteger)


class RetrievalCollectionStats(Base):
    """N and the total length over a collection's current chunks (avglen = total_length / n_chunks)."""

    __tablename__ = "retrieval_collection_stats"

    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    n_chunks: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    total_length: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    updated_at: Mapped[created_at]


# --------------------------------------------------------------------------- generation log


class PromptTemplate(Base):
    """A named prompt template; versions are immutable (enforced by a trigger)."""

    __tablename__ = "prompt_templates"
    __table_args__ = (sa.Index("uq_prompt_templates_tenant_name_version", "tenant", "name", "version", unique=True),)

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.Integer)
    text: Mapped[str] = mapped_column(sa.Text)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class PromptTemplateLabel(Base):
    """A movable label ('production', 'staging') on one version of a template.

    The table's key is (tenant, name, label) and it has no foreign key to (name, version), which
    is unique only per tenant: a label may point at a shared, shipped template (0013). Python
    addresses a label by (name, label): the tenant policy shows a transaction only its own rows.
    """

    __tablename__ = "prompt_template_labels"
    __table_args__ = (sa.PrimaryKeyConstraint("tenant", "name", "label"),)
    __mapper_args__ = {"primary_key": ["name", "label"]}

    name: Mapped[str] = mapped_column(sa.Text)
    label: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.Integer)
    moved_at: Mapped[created_at]
    moved_by: Mapped[Optional[str]] = mapped_column(sa.Text)
    tenant: Mapped[tenant_column]


class PromptTemplateLabelMove(Base):
    """Every label move, in order: the audit trail (and how to roll back)."""

    __tablename__ = "prompt_template_label_moves"
    __table_args__ = (sa.Index("ix_prompt_template_label_moves_name", "name", "label", "moved_at"),)

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text)
    label: Mapped[str] = mapped_column(sa.Text)
    from_version: Mapped[Optional[int]] = mapped_column(sa.Integer)
    to_version: Mapped[int] = mapped_column(sa.Integer)
    moved_by: Mapped[Optional[str]] = mapped_column(sa.Text)
    moved_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class ChatSession(Base):
    """A conversation: its prompts form a linked list through prompts.parent_id."""

    __tablename__ = "sessions"
    __table_args__ = (
        sa.Index("ix_sessions_created_at", "created_at"),
        sa.Index("ix_sessions_user", "user_id", "created_at"),
    )

    id: Mapped[intpk]
    user_id: Mapped[Optional[str]] = mapped_column(sa.Text)
    collection_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("collections.id", ondelete="SET NULL"))
    title: Mapped[Optional[str]] = mapped_column(sa.Text)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        sa.Index("ix_prompts_session", "session_id", "created_at"),
        sa.Index("ix_prompts_parent", "parent_id"),
        sa.Index("ix_prompts_created_at", "created_at"),
    )

    id: Mapped[intpk]
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    parent_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("prompts.id", ondelete="SET NULL"))
    user_id: Mapped[Optional[str]] = mapped_column(sa.Text)
    text: Mapped[str] = mapped_column(sa.Text)
    template_name: Mapped[Optional[str]] = mapped_column(sa.Text)
    template_version: Mapped[Optional[int]] = mapped_column(sa.Integer)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class Generation(Base):
    """One model call. Partitioned by month on created_at (0023), so the table's key is (id, created_at)."""

    __tablename__ = "generations"
    __table_args__ = (
        sa.CheckConstraint("status IN ('ok', 'error')", name="ck_generations_status"),
        sa.Index("ix_generations_prompt", "prompt_id"),
        sa.Index("ix_generations_created_at", "created_at"),
        sa.Index("ix_generations_model", "model_name", "created_at"),
        sa.Index("ix_generations_model_id", "model_id"),
        sa.Index("ix_generations_errors", "created_at", postgresql_where=sa.text("status = 'error'")),
        # One per latency column: the analytics views' percentiles per model read only the index (0007).
        *(
            sa.Index(f"ix_generations_model_{col}", "model_name", "model_revision", "model_id", col)
            for col in ("retrieval_ms", "generation_ms", "total_ms")
        ),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )
    # The ORM knows a generation by its id alone (one identity sequence feeds every partition, though
    # only (id, created_at) is enforced unique), so session.get(Generation, id) keeps working.
    __mapper_args__ = {"primary_key": ["id"]}

    id: Mapped[intpk]
    prompt_id: Mapped[int] = mapped_column(sa.ForeignKey("prompts.id", ondelete="CASCADE"))
    model_name: Mapped[str] = mapped_column(sa.Text)
    model_revision: Mapped[Optional[str]] = mapped_column(sa.Text)
    # Set when the model came from genloom's own registry, so analytics reach its training run.
    model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"))
    params: Mapped[jsonb]
    rendered_prompt: Mapped[Optional[str]] = mapped_column(sa.Text)
    output: Mapped[Optional[str]] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default="ok")
    error: Mapped[Optional[str]] = mapped_column(sa.Text)
    retrieval_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    rerank_ms: Mapped[Optional[float]] = mapped_column(sa.Float)  # the reranker's share, not counted in retrieval_ms
    generation_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    total_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    input_tokens: Mapped[Optional[int]] = mapped_column(sa.Integer)
    output_tokens: Mapped[Optional[int]] = mapped_column(sa.Integer)
    created_at: Mapped[created_at] = mapped_column(primary_key=True)  # the partition key
    tenant: Mapped[tenant_column]


class GenerationSource(Base):
    """A chunk that grounded a generation, with its rank and each retriever's view of it."""

    __tablename__ = "generation_sources"
    __table_args__ = (
        sa.Index("ix_generation_sources_chunk", "chunk_id"),
        sa.ForeignKeyConstraint(
            ["generation_id", "generation_created_at"], ["generations.id", "generations.created_at"], ondelete="CASCADE"
        ),
        {"postgresql_partition_by": "RANGE (generation_created_at)"},
    )

    generation_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    rank: Mapped[int] = mapped_column(sa.Integer, primary_key=True)  # 1 = [1] in the answer
    # The generation's created_at: the month partition (genloom.db.partitions) and the foreign key's second half.
    generation_created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    # NULL once the chunk was purged (`documents delete --purge`); `tombstone` then says what it was.
    chunk_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("chunks.id", ondelete="SET NULL"))
    tombstone: Mapped[Optional[dict[str, Any]]] = mapped_column(JSONB)
    score: Mapped[Optional[float]] = mapped_column(sa.Float)  # the fused score
    bm25_rank: Mapped[Optional[int]] = mapped_column(sa.Integer)
    bm25_score: Mapped[Optional[float]] = mapped_column(sa.Float)
    vector_rank: Mapped[Optional[int]] = mapped_column(sa.Integer)
    vector_score: Mapped[Optional[float]] = mapped_column(sa.Float)
    # Whether the answer's [n] markers cite this source (retrieved is not cited); NULL: unknown
    # (a sealed answer logged before migration 0017). Analytics credit only cited sources.
    cited: Mapped[Optional[bool]] = mapped_column(sa.Boolean)
    tenant: Mapped[tenant_column]


class Feedback(Base):
    """A user's score or thumb on a generation; partitioned like it, the key is (id, generation_created_at)."""

    __tablename__ = "feedback"
    __table_args__ = (
        sa.CheckConstraint("score IS NULL OR score BETWEEN 1 AND 5", name="ck_feedback_score"),
        sa.CheckConstraint("thumbs IS NULL OR thumbs IN (-1, 1)", name="ck_feedback_thumbs"),
        sa.Index("ix_feedback_generation", "generation_id"),
        sa.Index("ix_feedback_created_at", "created_at"),
        sa.ForeignKeyConstraint(
            ["generation_id", "generation_created_at"], ["generations.id", "generations.created_at"], ondelete="CASCADE"
        ),
        {"postgresql_partition_by": "RANGE (generation_created_at)"},
    )
    __mapper_args__ = {"primary_key": ["id"]}  # as Generation: the ORM's identity is the id

    id: Mapped[intpk]
    generation_id: Mapped[int] = mapped_column(sa.BigInteger)
    # Its generation's created_at: feedback lives in its generation's month partition (genloom.db.partitions).
    generation_created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    user_id: Mapped[Optional[str]] = mapped_column(sa.Text)
    score: Mapped[Optional[int]] = mapped_column(sa.SmallInteger)  # 1..5
    thumbs: Mapped[Optional[int]] = mapped_column(sa.SmallInteger)  # +1 up, -1 down
    label: Mapped[Optional[str]] = mapped_column(sa.Text)
    comment: Mapped[Optional[str]] = mapped_column(sa.Text)
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


# --------------------------------------------------------------------------- data


class Item(Base):
    """A piece of data, content-addressed by sha256 of its canonical bytes and never updated."""

    __tablename__ = "items"
    __table_args__ = (
        sa.CheckConstraint(_in("modality", ITEM_MODALITIES), name="ck_items_modality"),
        sa.CheckConstraint(_in("origin", ITEM_ORIGINS), name="ck_items_origin"),
        sa.Index("ix_items_run", "run_id"),
        sa.Index("ix_items_model", "model_id"),
        sa.Index("ix_items_origin", "origin"),
        sa.Index("uq_items_tenant_sha256", "tenant", "sha256", unique=True),
    )

    id: Mapped[intpk]
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))
    modality: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[bytes] = mapped_column(BYTEA)
    # Text items keep their text here too, so SQL can read it without decoding bytes.
    text: Mapped[Optional[str]] = mapped_column(sa.Text)
    shape: Mapped[Optional[list[int]]] = mapped_column(ARRAY(sa.Integer))
    dtype: Mapped[Optional[str]] = mapped_column(sa.Text)
    label: Mapped[Optional[str]] = mapped_column(sa.Text)
    origin: Mapped[str] = mapped_column(sa.Text, server_default="real")
    run_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"))
    model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"))
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (sa.Index("uq_datasets_tenant_name", "tenant", "name", unique=True),)

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text)
    modality: Mapped[Optional[str]] = mapped_column(sa.Text)
    description: Mapped[Optional[str]] = mapped_column(sa.Text)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]

    versions: Mapped[list[DatasetVersion]] = relationship(back_populates="dataset", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    """A numbered version of a dataset. Once sealed, triggers make it and its membership immutable."""

    __tablename__ = "dataset_versions"
    __table_args__ = (sa.UniqueConstraint("dataset_id", "version"),)

    id: Mapped[intpk]
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(sa.Integer)
    parent_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("dataset_versions.id"))
    created_by_run_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"))
    item_count: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    # sha256 over the sorted (item sha256, split) pairs: equal manifests mean equal versions.
    manifest_sha256: Mapped[Optional[str]] = mapped_column(sa.CHAR(64))
    sealed: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    sealed_at: Mapped[Optional[dt.datetime]]
    description: Mapped[Optional[str]] = mapped_column(sa.Text)
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class DatasetMember(Base):
    __tablename__ = "dataset_members"
    __table_args__ = (
        sa.CheckConstraint(_in("split", SPLITS), name="ck_dataset_members_split"),
        sa.Index("ix_dataset_members_item", "item_id"),
        sa.Index("ix_dataset_members_split", "version_id", "split"),
    )

    version_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(sa.ForeignKey("items.id"), primary_key=True)
    split: Mapped[str] = mapped_column(sa.Text)
    # The item's label in this version when it differs from items.label ('' = no label); NULL: the item's own.
    label: Mapped[Optional[str]] = mapped_column(sa.Text)
    # The item's caption in this version (clip and text-conditional diffusion read it); NULL: none.
    caption: Mapped[Optional[str]] = mapped_column(sa.Text)
    tenant: Mapped[tenant_column]


class DatasetShard(Base):
    """A packed read cache of a sealed image version's split (genloom.datasets.shards); safe to delete."""

    __tablename__ = "dataset_shards"

    version_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    shard_no: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    item_count: Mapped[int] = mapped_column(sa.Integer)
    shape: Mapped[list[int]] = mapped_column(ARRAY(sa.Integer))
    item_ids: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger))
    labels: Mapped[list[Optional[str]]] = mapped_column(ARRAY(sa.Text))
    payload: Mapped[bytes] = mapped_column(BYTEA, deferred=True)  # item_count images, uint8, back to back
    created_at: Mapped[created_at]


# --------------------------------------------------------------------------- work


class Run(Base):
    """One job: ingest, train, sample, evaluate, dedup, generate, ..."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", RUN_KINDS), name="ck_runs_kind"),
        sa.CheckConstraint(_in("status", RUN_STATUSES), name="ck_runs_status"),
        sa.Index("ix_runs_kind_started", "kind", "started_at"),
        sa.Index("ix_runs_input_version", "input_version_id"),
        sa.Index("ix_runs_output_version", "output_version_id"),
        sa.Index("ix_runs_model", "model_id"),
        sa.Index("ix_runs_running_host", "host", postgresql_where=sa.text("status = 'running'")),
        # `--resume NAME` finds the latest train run of that name (0004).
        sa.Index(
            "ix_runs_train_name", sa.text("(params ->> 'name')"), "id", postgresql_where=sa.text("kind = 'train'")
        ),
    )

    id: Mapped[intpk]
    kind: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default="running")
    name: Mapped[Optional[str]] = mapped_column(sa.Text)
    params: Mapped[jsonb]
    summary: Mapped[jsonb]  # final counts, timings, metrics: whatever the job reports at the end
    input_version_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="SET NULL"))
    output_version_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="SET NULL"))
    # For train runs: the model produced; for sample/evaluate runs: the model used.
    model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL", use_alter=True))
    collection_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("collections.id", ondelete="SET NULL"))
    device: Mapped[Optional[str]] = mapped_column(sa.Text)
    code_version: Mapped[Optional[str]] = mapped_column(sa.Text)
    host: Mapped[Optional[str]] = mapped_column(sa.Text)
    pid: Mapped[Optional[int]]  # the process running the job on `host` (see db/stale_runs.py)
    error: Mapped[Optional[str]] = mapped_column(sa.Text)
    started_at: Mapped[created_at]
    finished_at: Mapped[Optional[dt.datetime]]
    tenant: Mapped[tenant_column]


class Metric(Base):
    """A value a run reported. Partitioned by month on created_at (0023): the key is (id, created_at)."""

    __tablename__ = "metrics"
    __table_args__ = (
        sa.Index("ix_metrics_run_name_step", "run_id", "name", "step"),
        sa.Index("ix_metrics_item", "item_id", postgresql_where=sa.text("item_id IS NOT NULL")),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )
    __mapper_args__ = {"primary_key": ["id"]}  # as Generation: the ORM's identity is the id

    id: Mapped[intpk]
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[Optional[int]] = mapped_column(sa.Integer)  # NULL for a run's final metrics
    name: Mapped[str] = mapped_column(sa.Text)
    value: Mapped[float] = mapped_column(sa.Float)
    # Optional subject of the metric, e.g. the item a per-item anomaly score is about.
    item_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("items.id", ondelete="CASCADE"))
    created_at: Mapped[created_at] = mapped_column(primary_key=True)  # the partition key
    tenant: Mapped[tenant_column]


class Model(Base):
    """The model registry: a named, versioned checkpoint and the run that produced it."""

    __tablename__ = "models"
    __table_args__ = (
        sa.Index("uq_models_tenant_name_version", "tenant", "name", "version", unique=True),
        sa.Index("ix_models_run", "run_id"),
    )

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.Integer)
    architecture: Mapped[str] = mapped_column(sa.Text)  # vae, gan, diffusion, transformer, classifier, ...
    config: Mapped[jsonb]
    # 'torch' (a torch.save state dict) or 'hf-tar' (a tar of a Hugging Face model directory).
    format: Mapped[str] = mapped_column(sa.Text, server_default="torch")
    checkpoint: Mapped[bytes] = mapped_column(BYTEA, deferred=True)
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    run_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"))
    input_version_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="SET NULL"))
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class RunCheckpoint(Base):
    """Intermediate training state (weights, optimiser, step) for --resume; not a registered model."""

    __tablename__ = "run_checkpoints"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    payload: Mapped[bytes] = mapped_column(BYTEA, deferred=True)
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


# --------------------------------------------------------------------------- issue 7: evaluation and dedup


class DedupDecision(Base):
    """One item a dedup run dropped, the item kept in its place, and why."""

    __tablename__ = "dedup_decisions"
    __table_args__ = (
        sa.CheckConstraint(_in("method", DEDUP_DECISION_METHODS), name="ck_dedup_decisions_method"),
        sa.CheckConstraint("dropped_item_id <> kept_item_id", name="ck_dedup_decisions_distinct"),
        sa.Index("ix_dedup_decisions_run", "run_id"),
        sa.Index("ix_dedup_decisions_output", "output_version_id"),
        sa.Index("ix_dedup_decisions_dropped", "dropped_item_id"),
    )

    id: Mapped[intpk]
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    input_version_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    output_version_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    dropped_item_id: Mapped[int] = mapped_column(sa.ForeignKey("items.id"))
    kept_item_id: Mapped[int] = mapped_column(sa.ForeignKey("items.id"))
    method: Mapped[str] = mapped_column(sa.Text)
    similarity: Mapped[float] = mapped_column(sa.Float)
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class ItemEmbedder(Base):
    """What produced item vectors (sentence model, feature network, aligned pixels); one HNSW index each."""

    __tablename__ = "item_embedders"
    __table_args__ = (sa.CheckConstraint("dim > 0 AND dim <= 16000", name="ck_item_embedders_dim"),)

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    modality: Mapped[str] = mapped_column(sa.Text)
    dim: Mapped[int] = mapped_column(sa.Integer)
    model_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"))
    metadata_: Mapped[jsonb] = mapped_column("metadata")
    created_at: Mapped[created_at]


class ItemEmbedding(Base):
    """An item's vector under one embedder (items are content-addressed, so it is computed once)."""

    __tablename__ = "item_embeddings"

    item_id: Mapped[int] = mapped_column(sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    embedder_id: Mapped[int] = mapped_column(sa.ForeignKey("item_embedders.id", ondelete="CASCADE"), primary_key=True)
    embedding: Mapped[Any] = mapped_column(Vector())
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


class ChunkDuplicate(Base):
    """A chunk flagged as a near-duplicate of another chunk of its collection (search can anti-join)."""

    __tablename__ = "chunk_duplicates"
    __table_args__ = (
        sa.CheckConstraint(_in("method", DEDUP_DECISION_METHODS), name="ck_chunk_duplicates_method"),
        sa.CheckConstraint("chunk_id <> duplicate_of_chunk_id", name="ck_chunk_duplicates_distinct"),
        sa.Index("ix_chunk_duplicates_collection", "collection_id"),
        sa.Index("ix_chunk_duplicates_of", "duplicate_of_chunk_id"),
    )

    chunk_id: Mapped[int] = mapped_column(sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    duplicate_of_chunk_id: Mapped[int] = mapped_column(sa.ForeignKey("chunks.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("collections.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(sa.Text)
    similarity: Mapped[float] = mapped_column(sa.Float)
    run_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[created_at]
    tenant: Mapped[tenant_column]


# --------------------------------------------------------------------------- access (migration 0013)


class ApiKey(Base):
    """An API key. Only a salted scrypt hash of its secret is kept (genloom.keys); not tenant-scoped:
    a key names the tenant it acts for."""

    __tablename__ = "api_keys"
    __table_args__ = (sa.CheckConstraint(_in("role", KEY_ROLES), name="api_keys_role_check"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=True), primary_key=True)
    prefix: Mapped[str] = mapped_column(sa.Text, unique=True)  # the public part: glk_<prefix>_<secret>
    salt: Mapped[bytes] = mapped_column(BYTEA)
    hash: Mapped[bytes] = mapped_column(BYTEA)  # scrypt(secret, salt)
    role: Mapped[str] = mapped_column(sa.Text)
    tenant: Mapped[str] = mapped_column(sa.Text, server_default="default")
    note: Mapped[Optional[str]] = mapped_column(sa.Text)
    created_at: Mapped[created_at]
    created_by: Mapped[Optional[str]] = mapped_column(sa.Text)
    expires_at: Mapped[Optional[dt.datetime]]
    revoked_at: Mapped[Optional[dt.datetime]]


class AuditLog(Base):
    """Who did what (genloom.audit); append-only: a trigger refuses UPDATE, DELETE and TRUNCATE.

    Each tenant's rows form a hash chain (0016): a BEFORE INSERT trigger sets chain_seq, prev_hash
    and hash, so Python never does; `genloom audit verify` recomputes it."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_at", "at"),
        sa.Index("ix_audit_log_action", "action", "at"),
        sa.Index("uq_audit_log_tenant_chain_seq", "tenant", "chain_seq", unique=True),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=True), primary_key=True)
    # clock_timestamp(), not now(): entries of one long transaction keep their order.
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.clock_timestamp())
    tenant: Mapped[tenant_column]
    key_id: Mapped[Optional[int]] = mapped_column(sa.BigInteger)  # the API key that acted; NULL: the CLI
    os_user: Mapped[Optional[str]] = mapped_column(sa.Text)
    role: Mapped[Optional[str]] = mapped_column(sa.Text)  # the key's role, or 'cli'
    action: Mapped[str] = mapped_column(sa.Text)  # key.create, generation.delete, sql.run, auth.failure, ...
    object: Mapped[Optional[str]] = mapped_column(sa.Text)  # a name, an id, a statement's sha256
    outcome: Mapped[str] = mapped_column(sa.Text, server_default="ok")
    detail: Mapped[jsonb]
    chain_seq: Mapped[int] = mapped_column(sa.BigInteger)  # 1, 2, ... within the tenant
    prev_hash: Mapped[bytes] = mapped_column(BYTEA)  # the previous row's hash; 32 zero bytes for the first
    hash: Mapped[bytes] = mapped_column(BYTEA)  # sha256(prev_hash || the row), audit_log_row_hash()


class PiiFinding(Base):
    """What the PII detector found in one field of one object: type, count and where, never the value."""

    __tablename__ = "pii_findings"
    __table_args__ = (
        sa.CheckConstraint("count > 0", name="pii_findings_count_check"),
        sa.CheckConstraint(_in("mode", PII_FINDING_MODES), name="pii_findings_mode_check"),
        sa.Index("ix_pii_findings_object", "object_kind", "object_id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=True), primary_key=True)
    tenant: Mapped[tenant_column]
    at: Mapped[created_at]
    object_kind: Mapped[str] = mapped_column(sa.Text)  # 'document', 'prompt', 'generation'
    object_id: Mapped[int] = mapped_column(sa.BigInteger)
    field: Mapped[str] = mapped_column(sa.Text)  # 'text', 'answer', ...
    pii_type: Mapped[str] = mapped_column(sa.Text)  # 'email', 'phone', 'card', 'iban', 'ip', 'national_id'
    count: Mapped[int] = mapped_column(sa.Integer)
    spans: Mapped[list[Any]] = mapped_column(ARRAY(INT4RANGE))  # character offsets in the original text
    mode: Mapped[str] = mapped_column(sa.Text)
