"""what the HL7 v2 feeds answered: a retransmission gets the original's answer

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 00:00:00

`hl7_answers` (registry.schema, registry.hl7_answers): one row per accepted HL7 v2 message, by
sender (MSH-3, MSH-4) and MSH-10, written in the transaction of the message's effect, so that
a message sent again after a lost ACK is answered as the first time and changes nothing. A
table of the coordinator on a sharded registry (not partitioned by patient).
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_answers",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("control_id", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("answered_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_hl7_answers")),
        sa.UniqueConstraint("message_key", name=op.f("uq_hl7_answers_message_key")),
    )
    op.create_index(op.f("ix_hl7_answers_answered_at"), "hl7_answers", ["answered_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_hl7_answers_answered_at"), table_name="hl7_answers")
    op.drop_table("hl7_answers")
