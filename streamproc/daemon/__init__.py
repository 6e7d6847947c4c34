"""The daemon: the worker loop over the Redis and Postgres sides, flusher, backoff, systemd notify, metrics."""
