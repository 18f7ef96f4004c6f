"""Datasets: references, fingerprints, loaders (catalog, local files, the hub), transforms, the
template renderer, profiles and the leakage guard."""
