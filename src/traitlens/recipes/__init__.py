"""Workflows that read top to bottom over the pipeline's layers; `Study` delegates to them."""
