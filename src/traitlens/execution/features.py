"""The features that explain (and predict) transfer, gathered for a study's sources and targets.

Each group has a few features declared here in advance, so the explanation test cannot go
fishing among dozens of statistics with a handful of sources. Every group but `profile` has
pair-level features (one value per source and target), so each can reach the source x target
interaction that per-source statistics cannot:
- `hidden`: how the source's answers relate to the target's: label-set overlap, label format
  match, task-kind match, divergence between label priors, log ratio of answer lengths;
- `profile`: the source's own statistics (class entropy, log answer length, lexical diversity);
- `similarity`: source-to-target sentence-embedding, TF-IDF and vocabulary similarity;
- `quality`: the source's duplicate rate and base-model perplexity of its answers, and that
  perplexity relative to the target's answers';
- `behaviour`: what each adapter does, from its cells (known only after training; reported,
  not used for prediction).
Lengths and perplexities enter as logs (their tails are long). This needs the datasets, the
base model and the embedding model, so it lives here and not in `analysis/`, which only takes
the resulting tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traitlens.config.schema import DatasetSpec, Study
from traitlens.data.profile import answer_lengths, cosine, pair_statistics, profile_study

PREDICTIVE = ["hidden", "profile", "similarity", "quality"]  # known before training; behaviour is not
FEATURES = {
    "hidden": ["label_overlap", "format_match", "task_match", "prior_divergence", "log_length_ratio"],
    "profile": ["class_entropy_norm", "log_answer_tokens", "mtld"],
    "similarity": ["embedding_cosine", "tfidf_cosine", "vocabulary_jaccard"],
    "quality": ["duplicate_rate", "log_answer_perplexity", "log_perplexity_ratio"],
}
SAMPLE = 32  # examples per dataset for embeddings and perplexity: enough for a mean, and fast
TARGET_SAMPLE = 8  # target answers' perplexity only scales a pair feature; at 16 items the quickstart's 6 targets took 30 s


@dataclass
class StudyFeatures:
    source_profiles: pd.DataFrame
    target_profiles: pd.DataFrame
    groups: dict[str, pd.DataFrame]  # group -> features by source, or by (source, target)
    answer_lengths: dict[str, dict[str, list[int]]]  # "sources"/"targets" -> name -> token lengths

    def pairs(self, delta: pd.DataFrame | None) -> pd.DataFrame:
        """Every (source, target) pair with the features a prediction may use, known before
        training: the source's profile, the target's, and every pair-level feature."""
        from traitlens.analysis.explain import pair_rows

        pair_level = pd.concat([self.groups[group] for group in ("hidden", "similarity", "quality")], axis=1)
        return pair_rows(delta, self.groups["profile"], _log_lengths(self.target_profiles)[["log_answer_tokens"]],
                         pair_level)


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
    for profiles, tables, sample in ((source_profiles, sources, SAMPLE), (target_profiles, targets, TARGET_SAMPLE)):
        profiles["answer_perplexity"] = [answer_perplexity(scorer, table, templates[name], sample)
                                         for name, table in tables.items()]
    groups = feature_groups(sources, targets, source_profiles, target_profiles, similar)
    if behaviour is not None and not behaviour.empty:
        groups["behaviour"] = behaviour
    lengths = {side: {name: answer_lengths(table, scorer.tokenizer) for name, table in tables.items()}
               for side, tables in (("sources", sources), ("targets", targets))}
    return StudyFeatures(source_profiles, target_profiles, groups, lengths)


def feature_groups(sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame], source_profiles: pd.DataFrame,
                   target_profiles: pd.DataFrame, similar: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The declared features of each predictive group (see FEATURES), from the datasets, their
    profiles (with `answer_perplexity`) and the pair similarities."""
    source_logs, target_logs = _log_lengths(source_profiles), _log_lengths(target_profiles)
    pairs = similar.index
    hidden = pd.DataFrame([pair_statistics(sources[s], targets[t]) for s, t in pairs], index=pairs)
    hidden["log_length_ratio"] = [source_logs.loc[s, "log_answer_tokens"] - target_logs.loc[t, "log_answer_tokens"]
                                  for s, t in pairs]
    quality = pd.DataFrame({
        "duplicate_rate": [source_profiles.loc[s, "duplicate_rate"] for s, _ in pairs],
        "log_answer_perplexity": [source_logs.loc[s, "log_answer_perplexity"] for s, _ in pairs],
        "log_perplexity_ratio": [source_logs.loc[s, "log_answer_perplexity"] - target_logs.loc[t, "log_answer_perplexity"]
                                 for s, t in pairs]}, index=pairs)
    return {"hidden": hidden[FEATURES["hidden"]], "profile": source_logs[FEATURES["profile"]],
            "similarity": similar[FEATURES["similarity"]], "quality": quality[FEATURES["quality"]]}


def _log_lengths(profiles: pd.DataFrame) -> pd.DataFrame:
    out = profiles.assign(log_answer_tokens=np.log(profiles["answer_tokens_mean"].astype(float).clip(lower=1)))
    if "answer_perplexity" in profiles:
        out["log_answer_perplexity"] = np.log(profiles["answer_perplexity"].astype(float))
    return out
