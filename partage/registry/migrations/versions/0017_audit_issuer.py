"""the audit trail names who vouched for the actor

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 03:40:00

`audit_events.issuer` (registry.schema; partage.access.audit): the issuer of the credential
the request carried, the SAML assertion's `<Issuer>`, the bearer token's or the OpenID
provider's `iss` (BALP SAMLaccessTokenUse: agent[user].who.identifier.system). An actor's id is
a national id any trusted issuer may assert; the trail says which one did. Rows written before
keep an empty issuer. A table of the coordinator on a sharded registry.
"""
import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("issuer", sa.String(length=256), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("audit_events", "issuer")   # SQLite 3.35+ drops a column in place: its trigger stays
