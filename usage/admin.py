"""Usage records admin (read-only) and the cost export."""
