"""Generate docs/schema.md from the schema the migrations produce: ``python -m formicary.store.schema_doc``."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from sqlite_utils import Database

from .migrations import migrations

HEADER = """# The SQLite record

Generated from the migrations by `python -m formicary.store.schema_doc`; a test fails when it is stale.
Migrations are append-only and named; they are applied when the record is opened.

Migrations: {names}.
"""


def render() -> str:
    db = Database(sqlite3.connect(":memory:"))
    migrations.apply(db)
    parts = [HEADER.format(names=", ".join(f"`{m.name}`" for m in migrations._migrations))]
    for table in sorted(db.table_names()):
        if table.startswith("_") or table.startswith("sqlite_"):
            continue
        sql = db[table].schema
        parts.append(f"\n## {table}\n\n```sql\n{sql.strip()}\n```\n")
    for view in sorted(db.view_names()):
        sql = db[view].schema
        parts.append(f"\n## {view} (a view)\n\n```sql\n{sql.strip()}\n```\n")
    return "".join(parts)


def main() -> None:
    out = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent.parent / "docs" / "schema.md"
    )
    out.write_text(render())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
