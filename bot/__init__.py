"""stabilize: a ChatOps incident bot for Slack."""

__version__ = "0.1.0"
