"""Built-in eval scenarios (package data)."""
