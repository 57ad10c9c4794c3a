"""clinical reading: queue of documents whose PDF text is indexed in the background

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "text_index_jobs",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("doc_entry_uuid", sa.String(length=64), nullable=False),
        sa.Column("doc_lid", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_text_index_jobs")),
    )


def downgrade() -> None:
    op.drop_table("text_index_jobs")
