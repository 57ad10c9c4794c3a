"""a sharded registry's foreign servers wait a bounded time for their shard

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 21:00:00

Only on a coordinator (`partage.registry.sharding`): each shard server gains the libpq options
of `sharding.CONNECTION_OPTIONS` it lacks (connect_timeout, TCP keepalives, tcp_user_timeout),
so that a shard host that accepts connections but does not answer is a 503 for its patients
within seconds instead of a request held for ever. Other registries have nothing to change.
"""
from alembic import op

from partage.registry.sharding import bound_connections

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bound_connections(bind)


def downgrade() -> None:
    pass   # the options are harmless on the older code
