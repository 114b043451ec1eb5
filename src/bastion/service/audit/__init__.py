"""The audit log: every operator write and every denied attempt."""
