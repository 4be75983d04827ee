"""The system of record: the lead ledger (SQL), its outbox codec and the Redis outbox sink."""
