"""Client keys and teams admin."""
