"""Datasets: references, fingerprints, (later) loaders, transforms and the template renderer."""
