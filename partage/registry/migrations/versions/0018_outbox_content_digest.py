"""a retried notification carrying other content is another message

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 10:00:00

`notification_outbox.content_digest` (registry.schema; partage.registry.outbox.stamp): the
digest of what the row's `delivery_id` (wsa:MessageID, Bundle.id) was sent with. A retry is
judged again at delivery time; when what it carries differs (a document unmasked, or masked,
since the earlier attempt), it is another message and gets a new delivery id, so that a
recipient deduplicating on the id does not drop it. Rows written before have none: their next
attempt records it and keeps their id.
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notification_outbox", sa.Column("content_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("notification_outbox", "content_digest")
