"""The drift check that every service's migration test relies on really sees a difference."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, text
from sqlalchemy.ext.asyncio import create_async_engine

from platform_common.db import make_metadata
from platform_common.messaging.tables import add_messaging_tables
from platform_common.migrations import schema_drift


def _metadata(extra_column: bool) -> MetaData:
    metadata = make_metadata("drift")
    add_messaging_tables(metadata)
    columns = [Column("id", String(20), primary_key=True)]
    if extra_column:
        columns.append(Column("description", String(200)))
    Table("purchase_invoice", metadata, *columns)
    return metadata


async def test_drift_is_empty_for_the_migrated_models_and_names_an_unmigrated_column(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn = await conn.execution_options(schema_translate_map={"drift": None})
            else:
                await conn.execute(text("CREATE SCHEMA drift"))
            await conn.run_sync(_metadata(extra_column=False).create_all)
    finally:
        await engine.dispose()

    assert await schema_drift(db_url, _metadata(extra_column=False)) == []
    drift = await schema_drift(db_url, _metadata(extra_column=True))
    assert [(d[0], d[3].name) for d in drift] == [("add_column", "description")]
