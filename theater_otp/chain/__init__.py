"""The event chain: record, canonical hash, SQLite store and the writer process."""
