"""The features that explain (and predict) transfer, gathered for a study's sources and targets.

Groups: `hidden` (source profile statistics), `similarity` (source-to-target vocabulary, TF-IDF
and sentence-embedding similarity), `quality` (duplicate rate, base-model perplexity of the
answers), `behaviour` (what each adapter does, from its cells). This needs the datasets, the
base model and the embedding model, so it lives here and not in `analysis/`, which only takes
the resulting tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from traitlens.config.schema import DatasetSpec, Study
from traitlens.data.profile import HIDDEN_FEATURES, answer_lengths, cosine, profile_study

PREDICTIVE = ["hidden", "similarity", "quality"]  # known before training; behaviour is not
SAMPLE = 32  # examples per dataset for embeddings and perplexity: enough for a mean, and fast


@dataclass
class StudyFeatures:
    source_profiles: pd.DataFrame
    target_profiles: pd.DataFrame
    groups: dict[str, pd.DataFrame]  # group -> features by source, or by (source, target)
    answer_lengths: dict[str, dict[str, list[int]]]  # "sources"/"targets" -> name -> token lengths

    def pairs(self, delta: pd.DataFrame | None) -> pd.DataFrame:
        """Every (source, target) pair with the features a prediction may use, known before
        training: source statistics and quality, target statistics, pair similarity."""
        from traitlens.analysis.explain import pair_rows

        return pair_rows(delta, self.source_profiles[[*HIDDEN_FEATURES, "answer_perplexity"]],
                         self.target_profiles[list(HIDDEN_FEATURES)], self.groups["similarity"])


def study_features(study: Study, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
                   behaviour: pd.DataFrame | None = None, extra: list[DatasetSpec] = ()) -> StudyFeatures:
    """`extra`: specs of datasets in `sources`/`targets` that are not in the study (a new source
    or target to recommend for)."""
    from traitlens.models.embed import centroids
    from traitlens.models.hf import HFScorer
    from traitlens.models.quality import answer_perplexity

    scorer = HFScorer(study.base, dtype=study.evaluation.dtype, batch_size=study.evaluation.batch_size,
                      device=study.execution.device)
    scorer.use_adapter(None)
    source_profiles, target_profiles, similar = profile_study(sources, targets, scorer.tokenizer)
    source_vectors, target_vectors = centroids(sources, SAMPLE), centroids(targets, SAMPLE)
    similar["embedding_cosine"] = [cosine(source_vectors[s], target_vectors[t]) for s, t in similar.index]
    templates = {spec.name: spec.template for spec in [*study.sources, *study.targets, *extra]}
    source_profiles["answer_perplexity"] = [answer_perplexity(scorer, table, templates[name], SAMPLE)
                                            for name, table in sources.items()]
    groups = {"hidden": source_profiles[list(HIDDEN_FEATURES)], "similarity": similar,
              "quality": source_profiles[["duplicate_rate", "answer_perplexity"]]}
    if behaviour is not None and not behaviour.empty:
        groups["behaviour"] = behaviour
    lengths = {side: {name: answer_lengths(table, scorer.tokenizer) for name, table in tables.items()}
               for side, tables in (("sources", sources), ("targets", targets))}
    return StudyFeatures(source_profiles, target_profiles, groups, lengths)
