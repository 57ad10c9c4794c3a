"""one WAL flush per request on PostgreSQL: the table whose update makes it

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 18:00:00

`durability_marks` (registry.schema): inside a request (`Registry.one_sync`) the writes commit
with `synchronous_commit = off`, and at the request's end one synchronous commit updating
this thread's row flushes the WAL up to itself, hence past every earlier commit of the
request, before the answer goes out. Created on SQLite too (one schema), where it stays
empty: SQLite's writes are synced by `GroupSync`.
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "durability_marks",
        sa.Column("writer", sa.String(length=64), nullable=False),
        sa.Column("bumps", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("writer", name=op.f("pk_durability_marks")),
    )


def downgrade() -> None:
    op.drop_table("durability_marks")
