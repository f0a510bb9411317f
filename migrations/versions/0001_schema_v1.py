"""schema v1: retrieval store, generation log, datasets, runs, metrics, model registry

Tables come first and foreign keys last, because runs, dataset_versions and models
reference each other. Sealed dataset versions and content-addressed items are made
immutable here by triggers, so the rule holds for every client, not just genloom.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 06:17:50.860543
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from pgvector.sqlalchemy import Vector

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE EXTENSION IF NOT EXISTS vector')
    op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')

    op.create_table('dataset_versions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('dataset_id', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by_run_id', sa.BigInteger(), nullable=True),
    sa.Column('item_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('manifest_sha256', sa.CHAR(length=64), nullable=True),
    sa.Column('sealed', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('sealed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dataset_id', 'version')
    )
    op.create_table('datasets',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('modality', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('embedding_models',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('prompt_templates',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version')
    )
    op.create_table('runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='running', nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('input_version_id', sa.BigInteger(), nullable=True),
    sa.Column('output_version_id', sa.BigInteger(), nullable=True),
    sa.Column('model_id', sa.BigInteger(), nullable=True),
    sa.Column('collection_id', sa.BigInteger(), nullable=True),
    sa.Column('device', sa.Text(), nullable=True),
    sa.Column('code_version', sa.Text(), nullable=True),
    sa.Column('host', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('ingest', 'train', 'sample', 'evaluate', 'dedup', 'generate', 'import', 'score')", name='ck_runs_kind'),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'interrupted')", name='ck_runs_status'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_runs_input_version', 'runs', ['input_version_id'], unique=False)
    op.create_index('ix_runs_kind_started', 'runs', ['kind', 'started_at'], unique=False)
    op.create_index('ix_runs_model', 'runs', ['model_id'], unique=False)
    op.create_index('ix_runs_output_version', 'runs', ['output_version_id'], unique=False)
    op.create_table('collections',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('text_search_config', sa.Text(), server_default='english', nullable=False),
    sa.Column('embedding_model_id', sa.BigInteger(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('models',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('architecture', sa.Text(), nullable=False),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('format', sa.Text(), server_default='torch', nullable=False),
    sa.Column('checkpoint', postgresql.BYTEA(), nullable=False),
    sa.Column('sha256', sa.CHAR(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('input_version_id', sa.BigInteger(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version')
    )
    op.create_index('ix_models_run', 'models', ['run_id'], unique=False)
    op.create_table('run_checkpoints',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('payload', postgresql.BYTEA(), nullable=False),
    sa.Column('sha256', sa.CHAR(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'step')
    )
    op.create_table('documents',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('collection_id', sa.BigInteger(), nullable=False),
    sa.Column('external_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('uri', sa.Text(), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('mime_type', sa.Text(), nullable=True),
    sa.Column('sha256', sa.CHAR(length=64), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('collection_id', 'external_id', 'version')
    )
    op.create_index('ix_documents_metadata', 'documents', ['metadata'], unique=False, postgresql_using='gin')
    op.create_index('ix_documents_sha256', 'documents', ['collection_id', 'sha256'], unique=False)
    op.create_index('uq_documents_current', 'documents', ['collection_id', 'external_id'], unique=True, postgresql_where=sa.text('superseded_at IS NULL'))
    op.create_table('items',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('sha256', sa.CHAR(length=64), nullable=False),
    sa.Column('modality', sa.Text(), nullable=False),
    sa.Column('payload', postgresql.BYTEA(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('shape', postgresql.ARRAY(sa.Integer()), nullable=True),
    sa.Column('dtype', sa.Text(), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('origin', sa.Text(), server_default='real', nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('model_id', sa.BigInteger(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("modality IN ('text', 'image', 'tensor')", name='ck_items_modality'),
    sa.CheckConstraint("origin IN ('real', 'synthetic', 'augmented')", name='ck_items_origin'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    op.create_index('ix_items_model', 'items', ['model_id'], unique=False)
    op.create_index('ix_items_run', 'items', ['run_id'], unique=False)
    op.create_table('sessions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('collection_id', sa.BigInteger(), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sessions_created_at', 'sessions', ['created_at'], unique=False)
    op.create_table('chunks',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('token_count', sa.Integer(), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('document_id', 'ordinal')
    )
    op.create_table('dataset_members',
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('item_id', sa.BigInteger(), nullable=False),
    sa.Column('split', sa.Text(), nullable=False),
    sa.CheckConstraint("split IN ('train', 'val', 'test')", name='ck_dataset_members_split'),
    sa.PrimaryKeyConstraint('version_id', 'item_id')
    )
    op.create_index('ix_dataset_members_item', 'dataset_members', ['item_id'], unique=False)
    op.create_index('ix_dataset_members_split', 'dataset_members', ['version_id', 'split'], unique=False)
    op.create_table('metrics',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('item_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_metrics_run_name_step', 'metrics', ['run_id', 'name', 'step'], unique=False)
    op.create_table('prompts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('session_id', sa.BigInteger(), nullable=False),
    sa.Column('parent_id', sa.BigInteger(), nullable=True),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('template_name', sa.Text(), nullable=True),
    sa.Column('template_version', sa.Integer(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_prompts_created_at', 'prompts', ['created_at'], unique=False)
    op.create_index('ix_prompts_parent', 'prompts', ['parent_id'], unique=False)
    op.create_index('ix_prompts_session', 'prompts', ['session_id', 'created_at'], unique=False)
    op.create_table('embeddings',
    sa.Column('chunk_id', sa.BigInteger(), nullable=False),
    sa.Column('embedding_model_id', sa.BigInteger(), nullable=False),
    sa.Column('embedding', Vector(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('chunk_id', 'embedding_model_id')
    )
    op.create_table('generations',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('prompt_id', sa.BigInteger(), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_revision', sa.Text(), nullable=True),
    sa.Column('model_id', sa.BigInteger(), nullable=True),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('rendered_prompt', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), server_default='ok', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('retrieval_ms', sa.Float(), nullable=True),
    sa.Column('generation_ms', sa.Float(), nullable=True),
    sa.Column('total_ms', sa.Float(), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('ok', 'error')", name='ck_generations_status'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_generations_created_at', 'generations', ['created_at'], unique=False)
    op.create_index('ix_generations_model', 'generations', ['model_name', 'created_at'], unique=False)
    op.create_index('ix_generations_prompt', 'generations', ['prompt_id'], unique=False)
    op.create_table('feedback',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('generation_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('score', sa.SmallInteger(), nullable=True),
    sa.Column('thumbs', sa.SmallInteger(), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('score IS NULL OR score BETWEEN 1 AND 5', name='ck_feedback_score'),
    sa.CheckConstraint('thumbs IS NULL OR thumbs IN (-1, 1)', name='ck_feedback_thumbs'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_feedback_created_at', 'feedback', ['created_at'], unique=False)
    op.create_index('ix_feedback_generation', 'feedback', ['generation_id'], unique=False)
    op.create_table('generation_sources',
    sa.Column('generation_id', sa.BigInteger(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('chunk_id', sa.BigInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('bm25_rank', sa.Integer(), nullable=True),
    sa.Column('bm25_score', sa.Float(), nullable=True),
    sa.Column('vector_rank', sa.Integer(), nullable=True),
    sa.Column('vector_score', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('generation_id', 'rank')
    )
    op.create_index('ix_generation_sources_chunk', 'generation_sources', ['chunk_id'], unique=False)

    # Foreign keys last: runs, dataset_versions and models point at each other.
    op.create_foreign_key('fk_dataset_versions_created_by_run_id', 'dataset_versions', 'runs', ['created_by_run_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_dataset_versions_dataset_id', 'dataset_versions', 'datasets', ['dataset_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_dataset_versions_parent_id', 'dataset_versions', 'dataset_versions', ['parent_id'], ['id'])
    op.create_foreign_key('fk_runs_collection_id', 'runs', 'collections', ['collection_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_runs_input_version_id', 'runs', 'dataset_versions', ['input_version_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_runs_model_id', 'runs', 'models', ['model_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_runs_output_version_id', 'runs', 'dataset_versions', ['output_version_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_collections_embedding_model_id', 'collections', 'embedding_models', ['embedding_model_id'], ['id'])
    op.create_foreign_key('fk_models_input_version_id', 'models', 'dataset_versions', ['input_version_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_models_run_id', 'models', 'runs', ['run_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_run_checkpoints_run_id', 'run_checkpoints', 'runs', ['run_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_documents_collection_id', 'documents', 'collections', ['collection_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_items_model_id', 'items', 'models', ['model_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_items_run_id', 'items', 'runs', ['run_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_sessions_collection_id', 'sessions', 'collections', ['collection_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_chunks_document_id', 'chunks', 'documents', ['document_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_dataset_members_item_id', 'dataset_members', 'items', ['item_id'], ['id'])
    op.create_foreign_key('fk_dataset_members_version_id', 'dataset_members', 'dataset_versions', ['version_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_metrics_item_id', 'metrics', 'items', ['item_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_metrics_run_id', 'metrics', 'runs', ['run_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_prompts_parent_id', 'prompts', 'prompts', ['parent_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_prompts_session_id', 'prompts', 'sessions', ['session_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_embeddings_chunk_id', 'embeddings', 'chunks', ['chunk_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_embeddings_embedding_model_id', 'embeddings', 'embedding_models', ['embedding_model_id'], ['id'])
    op.create_foreign_key('fk_generations_model_id', 'generations', 'models', ['model_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key('fk_generations_prompt_id', 'generations', 'prompts', ['prompt_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_feedback_generation_id', 'feedback', 'generations', ['generation_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key('fk_generation_sources_chunk_id', 'generation_sources', 'chunks', ['chunk_id'], ['id'])
    op.create_foreign_key('fk_generation_sources_generation_id', 'generation_sources', 'generations', ['generation_id'], ['id'], ondelete='CASCADE')

    _create_triggers()


IMMUTABILITY_SQL = """
CREATE FUNCTION genloom_reject_sealed_members() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        touched := ARRAY[NEW.version_id];
    ELSIF TG_OP = 'DELETE' THEN
        touched := ARRAY[OLD.version_id];
    ELSE
        touched := ARRAY[OLD.version_id, NEW.version_id];
    END IF;
    IF EXISTS (SELECT 1 FROM dataset_versions WHERE id = ANY(touched) AND sealed) THEN
        RAISE EXCEPTION 'dataset version % is sealed: its membership cannot change; create a new version instead',
            touched[1] USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$;

CREATE TRIGGER dataset_members_sealed
BEFORE INSERT OR UPDATE OR DELETE ON dataset_members
FOR EACH ROW EXECUTE FUNCTION genloom_reject_sealed_members();

CREATE FUNCTION genloom_reject_sealed_version_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.sealed THEN
        RAISE EXCEPTION 'dataset version % is sealed and cannot be changed or deleted', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$;

CREATE TRIGGER dataset_versions_sealed
BEFORE UPDATE OR DELETE ON dataset_versions
FOR EACH ROW EXECUTE FUNCTION genloom_reject_sealed_version_change();

-- TRUNCATE skips row triggers; refuse it outright on the immutable tables.
CREATE FUNCTION genloom_reject_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are immutable (%)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER items_immutable BEFORE UPDATE ON items
FOR EACH ROW EXECUTE FUNCTION genloom_reject_update();
CREATE TRIGGER prompt_templates_immutable BEFORE UPDATE ON prompt_templates
FOR EACH ROW EXECUTE FUNCTION genloom_reject_update();
CREATE TRIGGER dataset_members_no_truncate BEFORE TRUNCATE ON dataset_members
FOR EACH STATEMENT EXECUTE FUNCTION genloom_reject_update();
"""


def _create_triggers() -> None:
    op.execute(IMMUTABILITY_SQL)


def downgrade() -> None:
    for table in [
        'generation_sources',
        'feedback',
        'generations',
        'embeddings',
        'prompts',
        'metrics',
        'dataset_members',
        'chunks',
        'sessions',
        'items',
        'documents',
        'run_checkpoints',
        'models',
        'collections',
        'runs',
        'prompt_templates',
        'embedding_models',
        'datasets',
        'dataset_versions',
    ]:
        op.execute(f'DROP TABLE IF EXISTS {table} CASCADE')
    op.execute('DROP FUNCTION IF EXISTS genloom_reject_sealed_members() CASCADE')
    op.execute('DROP FUNCTION IF EXISTS genloom_reject_sealed_version_change() CASCADE')
    op.execute('DROP FUNCTION IF EXISTS genloom_reject_update() CASCADE')
