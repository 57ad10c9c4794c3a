"""a sharded registry's global index names each object's uniqueId and logical id too

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 15:00:00

Only where `entry_uuids` exists (a registry sharded by `partage.registry.sharding`; the table
is the coordinator's, registry.entry_index): its rows gain the object's `unique_id` and `lid`,
filled from the objects (one pass over the shards, here only), so that a look-up by uniqueId
or by logical id asks the shards of the patients that hold them instead of every shard.
Unsharded registries have nothing to change.
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not sa.inspect(bind).has_table("entry_uuids"):
        return
    op.execute("ALTER TABLE entry_uuids ADD COLUMN IF NOT EXISTS unique_id varchar(128), "
               "ADD COLUMN IF NOT EXISTS lid varchar(64)")
    op.execute("UPDATE entry_uuids e SET unique_id = o.unique_id, lid = o.lid FROM registry_objects o "
               "WHERE o.entry_uuid = e.entry_uuid AND o.patient_pk = e.patient_pk")
    op.execute("CREATE INDEX IF NOT EXISTS ix_entry_uuids_unique_id ON entry_uuids (unique_id)")
    op.execute("CREATE INDEX IF NOT EXISTS ix_entry_uuids_lid ON entry_uuids (lid)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not sa.inspect(bind).has_table("entry_uuids"):
        return
    op.execute("DROP INDEX IF EXISTS ix_entry_uuids_lid")
    op.execute("DROP INDEX IF EXISTS ix_entry_uuids_unique_id")
    op.execute("ALTER TABLE entry_uuids DROP COLUMN IF EXISTS lid, DROP COLUMN IF EXISTS unique_id")
