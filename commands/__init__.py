"""Slash-command and CLI command handlers."""
