"""access control state (consent, record status, blocks) and the audit trail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "patient_access",
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("medecin_traitant", sa.String(length=64), nullable=False),
        sa.Column("bdg_opposed", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.String(length=20), nullable=False),
        sa.Column("closed_at", sa.String(length=20), nullable=True),
        sa.Column("updated_at", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.pk"], name=op.f("fk_patient_access_patient_pk_patients")),
        sa.PrimaryKeyConstraint("patient_pk", name=op.f("pk_patient_access")),
    )
    op.create_table(
        "patient_blocks",
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("professional_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.pk"], name=op.f("fk_patient_blocks_patient_pk_patients")),
        sa.PrimaryKeyConstraint("patient_pk", "professional_id", name=op.f("pk_patient_blocks")),
    )
    op.create_table(
        "audit_events",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("recorded_at", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("request", sa.String(length=300), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=False),
        sa.Column("actor_name", sa.String(length=256), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_role", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("structure", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("credential_id", sa.String(length=128), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.String(length=256), nullable=False),
        sa.Column("objects", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_patient", "audit_events", ["patient_pk", "pk"], unique=False)
    _append_only("audit_events")
    op.create_index("ix_audit_actor", "audit_events", ["actor_id", "pk"], unique=False)
    op.create_table(
        "credential_uses",
        sa.Column("credential_id", sa.String(length=160), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("credential_id", name=op.f("pk_credential_uses")),
    )
    op.create_table(
        "access_notifications",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("audit_pk", BIG, nullable=True),
        sa.Column("sent_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_access_notifications")),
    )
    op.create_index(op.f("ix_access_notifications_patient_pk"), "access_notifications", ["patient_pk"], unique=False)


def _append_only(table: str) -> None:
    """The database itself refuses to change or delete an audit record."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE FUNCTION partage_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$ LANGUAGE plpgsql")
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE PROCEDURE partage_append_only()")
    elif op.get_bind().dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def downgrade() -> None:
    op.drop_index(op.f("ix_access_notifications_patient_pk"), table_name="access_notifications")
    op.drop_table("access_notifications")
    op.drop_table("credential_uses")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
    op.drop_index("ix_audit_actor", table_name="audit_events")
    op.drop_index("ix_audit_patient", table_name="audit_events")
    op.drop_table("audit_events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS partage_append_only()")
    op.drop_table("patient_blocks")
    op.drop_table("patient_access")
