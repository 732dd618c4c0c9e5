"""Gateway: receivers (folder watch, file list), de-identification, the durable outbox and the forwarder."""
