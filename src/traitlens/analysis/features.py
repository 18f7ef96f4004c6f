"""The features that explain (and predict) transfer, as plain tables.

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
Lengths and perplexities enter as logs (their tails are long). Computing the profiles needs the
datasets, the base model's tokenizer and scorer and an embedding model (`recipes.features`);
this module only takes the resulting tables, and stores them as JSON so that an explanation can
be recomputed under new analysis settings without any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from traitlens.analysis.plain import json_ready
from traitlens.data.profile import pair_statistics

PREDICTIVE = ["hidden", "profile", "similarity", "quality"]  # known before training; behaviour is not
FEATURES = {
    "hidden": ["label_overlap", "format_match", "task_match", "prior_divergence", "log_length_ratio"],
    "profile": ["class_entropy_norm", "log_answer_tokens", "mtld"],
    "similarity": ["embedding_cosine", "tfidf_cosine", "vocabulary_jaccard"],
    "quality": ["duplicate_rate", "log_answer_perplexity", "log_perplexity_ratio"],
}


@dataclass
class Features:
    """A study's dataset features: profiles of every source and target, the declared feature
    groups, and answer token lengths (for the report's length figures).

    Example:
        >>> features = study.features()          # or study.results().features, once stored
        >>> features.groups["similarity"].round(2)
    """

    source_profiles: pd.DataFrame
    target_profiles: pd.DataFrame
    groups: dict[str, pd.DataFrame]  # group -> features by source, or by (source, target)
    answer_lengths: dict[str, dict[str, list[int]]]  # "sources"/"targets" -> name -> token lengths

    def pairs(self, delta: pd.DataFrame | None) -> pd.DataFrame:
        """Every (source, target) pair with the features a prediction may use, known before
        training: the source's profile, the target's, and every pair-level feature, with the
        observed `delta` where the matrix has one.

        Example:
            >>> features.pairs(res.matrix("delta")).head()
        """
        pair_level = pd.concat([self.groups[group] for group in ("hidden", "similarity", "quality")], axis=1)
        return pair_rows(delta, self.groups["profile"], log_lengths(self.target_profiles)[["log_answer_tokens"]],
                         pair_level)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, as stored (`from_json` reads it back).

        Example:
            >>> Features.from_json(features.to_json()).groups.keys()
        """
        return json_ready({
            "source_profiles": self.source_profiles.to_dict("index"),
            "target_profiles": self.target_profiles.to_dict("index"),
            "groups": {group: _keyed(frame).to_dict("records") for group, frame in self.groups.items()
                       if group in PREDICTIVE},
            "answer_lengths": self.answer_lengths})

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Features:
        """The features `to_json` wrote.

        Example:
            >>> Features.from_json(study.stored("features"))
        """
        groups = {}
        for group, records in stored["groups"].items():
            frame = pd.DataFrame(records)
            keys = ["source", "target"] if "target" in frame.columns else ["source"]
            groups[group] = frame.set_index(keys).astype(float)
        profiles = {side: pd.DataFrame.from_dict(stored[side], orient="index")
                    for side in ("source_profiles", "target_profiles")}
        return cls(profiles["source_profiles"], profiles["target_profiles"], groups, stored["answer_lengths"])


def feature_groups(sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame], source_profiles: pd.DataFrame,
                   target_profiles: pd.DataFrame, similar: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The declared features of each predictive group (see FEATURES), from the datasets, their
    profiles (with `answer_perplexity`) and the pair similarities."""
    source_logs, target_logs = log_lengths(source_profiles), log_lengths(target_profiles)
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


def log_lengths(profiles: pd.DataFrame) -> pd.DataFrame:
    out = profiles.assign(log_answer_tokens=np.log(profiles["answer_tokens_mean"].astype(float).clip(lower=1)))
    if "answer_perplexity" in profiles:
        out["log_answer_perplexity"] = np.log(profiles["answer_perplexity"].astype(float))
    return out


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """A group's frame with its index as `source` (and `target`) columns."""
    pair = isinstance(frame.index, pd.MultiIndex)
    return frame.rename_axis(["source", "target"] if pair else "source").reset_index()


def pair_rows(delta: pd.DataFrame | None, sources: pd.DataFrame, targets: pd.DataFrame,
              similar: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target) pair in `similar`, with source, target and pair features
    (prefixed source:, target:, pair:) and the observed delta where there is one."""
    rows = similar.add_prefix("pair:").reset_index()
    rows = rows.merge(sources.add_prefix("source:"), left_on="source", right_index=True, how="left")
    rows = rows.merge(targets.add_prefix("target:"), left_on="target", right_index=True, how="left")
    if delta is not None:
        observed = delta.stack().rename("delta").reset_index()
        observed.columns = ["source", "target", "delta"]
        rows = rows.merge(observed, on=["source", "target"], how="left")
    return rows
