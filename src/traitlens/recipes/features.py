"""Computing the datasets' features (`analysis.features` declares them and holds the tables).

This needs the datasets, the base model's tokenizer and scorer (answer perplexity) and an
embedding model (similarity), so it lives here and not in `analysis/`. The scorer and the
embedder are given, never built here: a test or a notebook can pass its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from traitlens.analysis.features import Features, feature_groups
from traitlens.config.schema import DatasetSpec, Study
from traitlens.data.profile import answer_lengths, cosine, profile_study
from traitlens.models.scorer import Scorer

# Bump when the features computed for the same datasets and base change, so stored features
# are recomputed (they are keyed on the datasets, the base and this).
FEATURES_CODE_VERSION = 1
SAMPLE = 32  # examples per dataset for embeddings and perplexity: enough for a mean, and fast
TARGET_SAMPLE = 8  # target answers' perplexity only scales a pair feature; at 16 items the quickstart's 6 targets took 30 s

Embedder = Callable[[dict[str, pd.DataFrame], int], dict[str, np.ndarray]]  # tables, sample -> centroids


def study_features(study: Study, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
                   scorer: Scorer, embed: Embedder | None = None, extra: list[DatasetSpec] = ()) -> Features:
    """Profiles, similarities and the declared feature groups of every source and target.
    `scorer`: the base model (its tokenizer counts tokens, its log-likelihoods give answer
    perplexity); `embed`: dataset centroids (default: MiniLM, `models.embed.centroids`).
    `extra`: specs of datasets in `sources`/`targets` that are not in the study (a new source
    or target to recommend for)."""
    from traitlens.models.quality import answer_perplexity

    if embed is None:
        from traitlens.models.embed import centroids as embed
    scorer.use_adapter(None)
    source_profiles, target_profiles, similar = profile_study(sources, targets, scorer.tokenizer)
    source_vectors, target_vectors = embed(sources, SAMPLE), embed(targets, SAMPLE)
    similar["embedding_cosine"] = [cosine(source_vectors[s], target_vectors[t]) for s, t in similar.index]
    templates = {spec.name: spec.template for spec in [*study.sources, *study.targets, *extra]}
    for profiles, tables, sample in ((source_profiles, sources, SAMPLE), (target_profiles, targets, TARGET_SAMPLE)):
        profiles["answer_perplexity"] = [answer_perplexity(scorer, table, templates[name], sample)
                                         for name, table in tables.items()]
    groups = feature_groups(sources, targets, source_profiles, target_profiles, similar)
    lengths = {side: {name: answer_lengths(table, scorer.tokenizer) for name, table in tables.items()}
               for side, tables in (("sources", sources), ("targets", targets))}
    return Features(source_profiles, target_profiles, groups, lengths)
