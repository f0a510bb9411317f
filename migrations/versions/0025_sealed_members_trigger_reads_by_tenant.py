"""genloom_reject_sealed_members(): read the dataset version within the member's tenant

The trigger that keeps a sealed dataset version's membership fixed looked the version up by id
alone. A member and its version always share a tenant, so filtering on it changes nothing on one
node (the id is unique there), and on a Citus cluster (genloom.db.distribute: every table
distributed by tenant, co-located) it makes the trigger's lookup a router query to the shard of
the same tenant on the same worker: local execution, inside the inserting transaction. Without it
the lookup ran over every shard from inside a worker's trigger, which Citus refuses.

Revision ID: 0025
Revises: 0024
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

BODY = """
CREATE OR REPLACE FUNCTION genloom_reject_sealed_members() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint[];
    owner text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        touched := ARRAY[NEW.version_id];
        owner := NEW.tenant;
    ELSIF TG_OP = 'DELETE' THEN
        touched := ARRAY[OLD.version_id];
        owner := OLD.tenant;
    ELSE
        touched := ARRAY[OLD.version_id, NEW.version_id];
        owner := OLD.tenant;
    END IF;
    IF EXISTS (SELECT 1 FROM dataset_versions WHERE tenant = owner AND id = ANY(touched) AND sealed) THEN
        RAISE EXCEPTION 'dataset version % is sealed: its membership cannot change; create a new version instead',
            touched[1] USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$;
"""

OLD_BODY = """
CREATE OR REPLACE FUNCTION genloom_reject_sealed_members() RETURNS trigger
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
"""


def upgrade() -> None:
    op.execute(BODY)


def downgrade() -> None:
    op.execute(OLD_BODY)
