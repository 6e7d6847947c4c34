"""The Postgres side: the sink and its exactly-once ledger, migrations, time partitions and retention."""
