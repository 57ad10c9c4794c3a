"""notifications: subscriptions (DSUB, DSUBm), the outbox, delivery state of patients' notices

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 09:00:00

- subscriptions: one row per DSUB / FHIR subscription, with the subscriber as authenticated;
- notification_outbox: what is owed to subscribers, written with the registration;
- access_notifications: delivery columns (state, attempts, lease, Message-ID, documents), so
  that the notices queued since 0002 are e-mailed by the same sender.
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("door", sa.String(length=8), nullable=False),
        sa.Column("topic", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.String(length=16), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.String(length=256), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("mime_type", sa.String(length=64), nullable=False),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.String(length=20), nullable=False),
        sa.Column("updated_at", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("public_id", name="uq_subscriptions_public_id"),
    )
    op.create_index("ix_subscriptions_patient_status", "subscriptions", ["patient_pk", "status"])
    op.create_index("ix_subscriptions_actor", "subscriptions", ["actor_id"])
    op.create_table(
        "notification_outbox",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_pk", BIG, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.String(length=256), nullable=False),
        sa.Column("submission_set", sa.String(length=64), nullable=False),
        sa.Column("documents", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=True),
        sa.Column("event_number", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_notification_outbox")),
        sa.UniqueConstraint("delivery_id", name="uq_notification_outbox_delivery_id"),
    )
    op.create_index("ix_outbox_due", "notification_outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_subscription", "notification_outbox", ["subscription_pk"])
    with op.batch_alter_table("access_notifications") as batch:
        batch.add_column(sa.Column("notice_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("documents", sa.Text(), nullable=True))
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="pending"))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.Float(), nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    # Notices a CLI operator already marked as sent are not sent again.
    notices = sa.table("access_notifications", sa.column("sent_at"), sa.column("state"))
    op.get_bind().execute(notices.update().where(notices.c.sent_at.is_not(None)).values(state="sent"))
    op.create_index("ix_access_notifications_due", "access_notifications", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_access_notifications_due", table_name="access_notifications")
    with op.batch_alter_table("access_notifications") as batch:
        for column in ("last_error", "claimed_until", "claimed_by", "next_attempt_at", "attempts", "state",
                       "documents", "notice_id"):
            batch.drop_column(column)
    op.drop_index("ix_outbox_subscription", table_name="notification_outbox")
    op.drop_index("ix_outbox_due", table_name="notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_index("ix_subscriptions_actor", table_name="subscriptions")
    op.drop_index("ix_subscriptions_patient_status", table_name="subscriptions")
    op.drop_table("subscriptions")
