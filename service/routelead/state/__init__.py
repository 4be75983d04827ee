"""Hot-state ports (caps, dedupe, idempotency) and their adapters."""
