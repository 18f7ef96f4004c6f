"""traitlens: which training datasets help or hurt which capabilities, and why.

traitlens fine-tunes one LoRA adapter per source dataset on a base model, evaluates the base and
every adapter on every target task (the transfer matrix), finds the latent traits behind the
matrix, and tests which dataset features explain transfer. A study is one YAML file.

The Python API (the `traitlens` command is a thin layer over it):

    >>> import traitlens
    >>> study = traitlens.load("examples/quickstart.yaml")   # a Study
    >>> study.plan(); study.run()                             # jobs as a DataFrame; run what is missing
    >>> res = study.results()                                 # Results: cells, items, matrix(...)
    >>> traits = res.traits()                                 # loadings_, scores_, explained_variance_ratio_
    >>> why = res.explain()                                   # once `study.explain()` stored the features
    >>> recs = study.recommend(target="new-target.yaml")
    >>> study.report("out.html")
    >>> res = traitlens.load_items("store/report/quickstart-data")   # an export, no store or model
    >>> traitlens.catalog(); rows, splits = traitlens.read_dataset("boolq")   # datasets, offline

See docs/api.md.
"""

import importlib

from traitlens.version import __version__

# Imported on first use, so that `import traitlens` (and every `traitlens` command) does not pay
# for scipy and scikit-learn until an analysis needs them; `dir()` and `help()` still list them.
_PUBLIC = {"load": "traitlens.api", "load_items": "traitlens.api", "Study": "traitlens.api",
           "catalog": "traitlens.api", "read_dataset": "traitlens.api", "compare_studies": "traitlens.api",
           "StudyComparison": "traitlens.analysis.compare",
           "Results": "traitlens.api", "Recommendation": "traitlens.recipes.recommend",
           "ProbeForecast": "traitlens.recipes.forecast", "Pilot": "traitlens.analysis.pilot",
           "TraitAnalysis": "traitlens.analysis.analyze", "Traits": "traitlens.analysis.traits", "Explanation": "traitlens.analysis.explain",
           "Features": "traitlens.analysis.features",
           "ConfigError": "traitlens.errors", "TraitlensError": "traitlens.errors"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'traitlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
