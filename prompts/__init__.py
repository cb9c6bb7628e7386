"""Markdown prompts for the supervisor and the seven specialists (package data)."""
