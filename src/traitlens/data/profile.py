"""Profiles of datasets: the hidden statistics the paper says explain transfer, and surface
similarity between a source and a target (the baseline that claim is tested against).

Readability and MTLD are written here: textstat >= 0.7.5 downloads NLTK's cmudict at run time
(fails offline) and 0.7.4 needs pkg_resources; lexicalrichness ships only as an sdist. Syllables
come from pyphen's hyphenation dictionaries, which work offline. Token lengths use the base
model's own tokenizer, so "long answers" means long for the model being trained.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

WORD = re.compile(r"[A-Za-z']+|\d+(?:[.,]\d+)*")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "cannot",
                       "without", "n't", "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "wont"})
MTLD_THRESHOLD = 0.72  # McCarthy & Jarvis (2010)
PROFILE_ROWS = 1000  # rows a profile is estimated from (see `profile_study`)

# Which profile columns form the "hidden statistics" feature group.
HIDDEN_FEATURES = ("n_classes", "class_entropy_norm", "majority_share", "imbalance_ratio",
                   "answer_tokens_mean", "input_tokens_mean", "mtld", "type_token_ratio",
                   "readability", "digit_density", "question_rate", "negation_rate")


def question_text(table: pd.DataFrame) -> pd.Series:
    """What a model reads before answering: the passage (if any) and the input."""
    return (table["passage"].fillna("") + " " + table["input"]) if "passage" in table else table["input"]


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def class_statistics(answers: pd.Series) -> dict[str, float]:
    counts = answers.value_counts()
    shares = counts / counts.sum()
    entropy = float(-(shares * np.log2(shares)).sum())
    return {"n_classes": float(len(counts)), "class_entropy": entropy,
            "class_entropy_norm": entropy / math.log2(len(counts)) if len(counts) > 1 else 0.0,
            "majority_share": float(shares.max()), "imbalance_ratio": float(counts.max() / counts.min())}


def mtld(tokens: list[str], threshold: float = MTLD_THRESHOLD) -> float:
    """Measure of textual lexical diversity: mean length of word runs whose type-token ratio
    stays above the threshold, averaged over both reading directions."""
    def one_way(sequence: list[str]) -> float:
        factors, types, count = 0.0, set(), 0
        for token in sequence:
            types.add(token)
            count += 1
            if len(types) / count <= threshold:
                factors, types, count = factors + 1, set(), 0
        if count:  # the partial factor at the end counts in proportion to how far it got
            factors += (1 - len(types) / count) / (1 - threshold)
        return len(sequence) / factors if factors else float(len(sequence))

    return (one_way(tokens) + one_way(tokens[::-1])) / 2 if tokens else 0.0


def flesch_reading_ease(texts: list[str]) -> float:
    import pyphen

    dictionary = pyphen.Pyphen(lang="en_US")
    n_words = n_sentences = n_syllables = 0
    for text in texts:
        found = [w for w in WORD.findall(text) if not w[0].isdigit()]
        n_words += len(found)
        n_sentences += max(1, len(SENTENCE_END.findall(text)))
        n_syllables += sum(max(1, len(dictionary.positions(w)) + 1) for w in found)
    if not n_words:
        return 0.0
    return 206.835 - 1.015 * n_words / n_sentences - 84.6 * n_syllables / n_words


def profile(table: pd.DataFrame, tokenizer: Any) -> dict[str, float]:
    """The profile of one prepared dataset (canonical columns input, answer, passage?). Size,
    duplicate rate and class statistics (when there are at most 20 distinct answers) count every
    row; the text statistics (tokens, vocabulary, readability, rates) come from a seeded sample
    of at most PROFILE_ROWS rows: they settle long before that, and whole test sets (3,270 BoolQ
    passages, say) made profiling a fifth of a quickstart's analysis."""
    rows = _sample(table)
    inputs = question_text(rows)
    answers = table["answer"].astype(str)
    encode = lambda texts: np.array([len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]])
    input_tokens, answer_tokens = encode(inputs), encode(rows["answer"].astype(str))
    all_words = [w for text in inputs for w in words(text)]
    texts = list(inputs)
    out = {"size": float(len(table)),
           "input_tokens_mean": float(input_tokens.mean()), "input_tokens_median": float(np.median(input_tokens)),
           "input_tokens_p90": float(np.percentile(input_tokens, 90)),
           "answer_tokens_mean": float(answer_tokens.mean()), "answer_tokens_median": float(np.median(answer_tokens)),
           "answer_tokens_p90": float(np.percentile(answer_tokens, 90)),
           "mtld": mtld(all_words), "type_token_ratio": len(set(all_words)) / max(1, len(all_words)),
           "vocabulary_size": float(len(set(all_words))), "readability": flesch_reading_ease(texts),
           "digit_density": sum(c.isdigit() for t in texts for c in t) / max(1, sum(len(t) for t in texts)),
           "number_density": sum(len(NUMBER.findall(t)) for t in texts) / max(1, len(all_words)),
           "question_rate": float(np.mean(["?" in t for t in rows["input"]])),
           "negation_rate": float(np.mean([any(w in NEGATIONS for w in words(t)) for t in texts])),
           "duplicate_rate": float(question_text(table).duplicated().mean())}
    # Free-form answers (math, generation) have no class distribution worth the name.
    classes = class_statistics(answers) if answers.nunique() <= 20 else {
        "n_classes": float(answers.nunique()), "class_entropy": float("nan"), "class_entropy_norm": float("nan"),
        "majority_share": float(answers.value_counts(normalize=True).max()), "imbalance_ratio": float("nan")}
    return out | classes


def _sample(table: pd.DataFrame) -> pd.DataFrame:
    return table if len(table) <= PROFILE_ROWS else table.sample(n=PROFILE_ROWS, random_state=0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors; 0 when either is all zeros (no shared basis to compare)."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if a.any() and b.any() else 0.0


def similarity(source: pd.DataFrame, target: pd.DataFrame) -> dict[str, float]:
    """Surface similarity of a source to a target: vocabulary overlap and TF-IDF cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    source_text, target_text = question_text(source), question_text(target)
    source_words = Counter(w for t in source_text for w in words(t))
    target_words = Counter(w for t in target_text for w in words(t))
    shared = set(source_words) & set(target_words)
    jaccard = len(shared) / max(1, len(set(source_words) | set(target_words)))
    coverage = sum(target_words[w] for w in shared) / max(1, sum(target_words.values()))
    vectorizer = TfidfVectorizer(token_pattern=WORD.pattern, lowercase=True).fit(pd.concat([source_text, target_text]))
    centroid = lambda texts: np.asarray(vectorizer.transform(texts).mean(axis=0)).ravel()
    return {"vocabulary_jaccard": jaccard, "target_token_coverage": coverage,
            "tfidf_cosine": cosine(centroid(source_text), centroid(target_text))}


def answer_kind(answers: pd.Series) -> tuple[str, str]:
    """(kind, format) of a dataset's answers: kind "labels" (at most 20 distinct answers) with
    format "digit", "letter" or "word", else kind "free" with format "number" or "text"."""
    values = answers.astype(str).str.strip()
    if values.nunique() <= 20:
        if values.str.fullmatch(r"-?\d+").all():
            return "labels", "digit"
        return "labels", "letter" if values.str.fullmatch(r"[A-Z]").all() else "word"
    return "free", "number" if values.str.fullmatch(r"-?[\d,]+(?:\.\d+)?").mean() > 0.9 else "text"


def label_prior(answers: pd.Series) -> dict[str, float] | None:
    """The share of each label among the answers, lower-cased; None for free-form answers."""
    values = answers.astype(str).str.strip().str.lower()
    return values.value_counts(normalize=True).to_dict() if values.nunique() <= 20 else None


def pair_statistics(source: pd.DataFrame, target: pd.DataFrame) -> dict[str, float]:
    """How a source's answers relate to a target's: the share of label names they have in
    common (Jaccard, 0 for free-form answers), whether they are written in the same format
    (word / digit / letter labels, numbers, text) and are the same kind of task (labels vs free
    answers), and the Jensen-Shannon divergence (bits, 0-1) between the source's label prior and
    the target's gold prior (1 when they share no label; NaN for free-form answers)."""
    (source_kind, source_format), (target_kind, target_format) = answer_kind(source["answer"]), answer_kind(target["answer"])
    source_prior, target_prior = label_prior(source["answer"]), label_prior(target["answer"])
    if source_prior is None or target_prior is None:
        overlap, divergence = 0.0, float("nan")
    else:
        labels = set(source_prior) | set(target_prior)
        overlap = len(set(source_prior) & set(target_prior)) / len(labels)
        p = np.array([source_prior.get(label, 0.0) for label in labels])
        q = np.array([target_prior.get(label, 0.0) for label in labels])
        middle = (p + q) / 2
        kl = lambda a: float(np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / middle), 0.0)))  # noqa: E731
        divergence = (kl(p) + kl(q)) / 2
    return {"label_overlap": overlap, "format_match": float(source_format == target_format),
            "task_match": float(source_kind == target_kind), "prior_divergence": divergence}


def answer_lengths(table: pd.DataFrame, tokenizer: Any, sample: int = 200, seed: int = 0) -> list[int]:
    """Token lengths of a seeded sample of the answers, for length distributions in the report."""
    rows = table.sample(n=min(sample, len(table)), random_state=seed)
    return [len(ids) for ids in tokenizer(list(rows["answer"].astype(str)), add_special_tokens=False)["input_ids"]]


def profile_study(sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame], tokenizer: Any
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(source profiles, target profiles, similarity of every source to every target); text
    statistics and similarities from samples of at most PROFILE_ROWS rows (see `profile`)."""
    source_profiles = pd.DataFrame({n: profile(t, tokenizer) for n, t in sources.items()}).T
    target_profiles = pd.DataFrame({n: profile(t, tokenizer) for n, t in targets.items()}).T
    pairs = {(s, t): similarity(_sample(source), _sample(target))
             for s, source in sources.items() for t, target in targets.items()}
    similar = pd.DataFrame(pairs).T
    similar.index.names = ["source", "target"]
    return source_profiles, target_profiles, similar
