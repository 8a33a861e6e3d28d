"""Runbook definitions and their executors."""
