"""The SQLite record: schema migrations, the one writer, read queries. Never imports Textual."""
