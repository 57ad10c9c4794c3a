"""Alembic environment: runs on the connection the Registry hands over (no ini file)."""

from alembic import context

from partage.registry.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line: build an engine from sqlalchemy.url
    from partage.registry.store import make_engine

    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise SystemExit("alembic: set sqlalchemy.url (the registry's database) to migrate")
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=True, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    # One transaction per migration (Registry.migrate says why), unless the caller's connection
    # is already in a transaction, which alembic then uses for every migration.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
