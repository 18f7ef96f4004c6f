"""Scoring the base and adapters on targets: requests per target kind, metrics, cells."""

# Bump when scoring changes what a cell contains, so cells of the old code are not reused (it
# enters every evaluation job's key).
SCORING_CODE_VERSION = 1
