"""Scoring the base and adapters on targets: requests per target kind, metrics, cells."""
