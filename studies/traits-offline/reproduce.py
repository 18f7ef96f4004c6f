"""Every number in FINDINGS.md, recomputed from the committed item-level exports
(`report-data/` for Gemma-3-270M, `smollm2-report-data/` for the SmolLM2 copy) with no model and
no store. The hypotheses and their verdict rules are DESIGN.md's.

    .venv/bin/python studies/traits-offline/reproduce.py          # print every table
    .venv/bin/python studies/traits-offline/reproduce.py --write  # refresh FINDINGS.md's tables

FINDINGS.md holds each table between `<!-- reproduce:NAME -->` and `<!-- /reproduce -->`;
tests/test_studies.py checks that the committed tables equal what this script prints.

Intervals: 95% percentile intervals from resampling each target's items (the same items for
every model, so contrasts are paired); targets are resampled independently. 1,000 resamples
for contrasts; 200 for the trait comparisons (H6's seed split, H7), which refit both studies'
traits on every resample. Contrasts that pool
adapters average their per-item scores first. Calibrated scores keep the label prior computed
on all items (it is not re-estimated per resample).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import traitlens

HERE = Path(__file__).resolve().parent
FINDINGS = HERE / "FINDINGS.md"
sys.path.insert(0, str(HERE.parent))  # studies/ is not a package
from findings import main as run, markdown  # noqa: E402
SAMPLES, SEED = 1000, 0
REFITS = 200  # item resamples for the comparisons, each of which refits both studies' traits
SENTIMENT = ["movie", "amazon", "nyt-words", "nyt-digits"]
POSITIVE = {"movie": "positive", "amazon": "positive", "nyt-words": "positive", "nyt-digits": "2"}
CHANCE = {"movie": 1 / 2, "amazon": 1 / 2, "nyt-words": 1 / 3, "nyt-digits": 1 / 3, "piqa": 1 / 2}
# DESIGN.md's negligible band: an interval inside it contradicts a predicted effect.
BAND = {"calibrated_margin": 0.1, "calibrated_accuracy": 0.03, "accuracy": 0.03, "share": 0.03}
FACTORIAL = [f"{corpus}-{balance}-{labels}" for corpus in ("tweets", "movie") for balance in ("bal", "skew")
             for labels in ("words", "digits")]
GROUPS = {"sentiment": FACTORIAL + ["amazon-5way"],
          "reasoning": ["piqa", "social-iqa", "commonsense-qa", "openbookqa"],
          "arithmetic": ["arith-short", "arith-worked", "asdiv"]}
TARGET_GROUPS = {"sentiment": SENTIMENT, "reasoning": ["piqa"], "arithmetic": ["arithmetic"]}


class Items:
    """One study's per-item values: for each target, a models x items array under a metric
    (generated targets fall back to accuracy), the predictions, and the generated lengths."""

    def __init__(self, results, metric: str):
        table = results.scored(metric).items
        self.models = table.drop_duplicates("model").set_index("model")[["source", "seed"]]
        self.values, self.predictions, self.lengths = {}, {}, {}
        for target, rows in table.groupby("target"):
            self.values[target] = rows.pivot(index="model", columns="item", values="value")
            self.predictions[target] = rows.pivot(index="model", columns="item", values="prediction")
            self.lengths[target] = rows.pivot(index="model", columns="item", values="generated_tokens").astype(float)

    def adapters(self, sources: list[str], seeds: list[int] | None = None) -> list[str]:
        chosen = self.models[self.models["source"].isin(sources)]
        return list(chosen.index if seeds is None else chosen[chosen["seed"].isin(seeds)].index)

    def mean(self, target: str, models: list[str], of: str = "values") -> np.ndarray:
        """Per item: the mean over `models` of their values, positive-label indicator ("share")
        or generated length ("lengths")."""
        if of == "share":
            return (self.predictions[target].loc[models] == POSITIVE[target]).to_numpy(float).mean(axis=0)
        return getattr(self, of)[target].loc[models].to_numpy(float).mean(axis=0)

    def delta(self, target: str, sources: list[str], of: str = "values") -> np.ndarray:
        """Per item: the pooled adapters of `sources` minus the base."""
        return self.mean(target, self.adapters(sources), of) - self.mean(target, ["base"], of)


def contrast(terms: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[float, float, float]:
    """Sum over targets of the mean of a per-item vector; its interval resamples each target's
    items independently."""
    estimate = sum(float(np.mean(u)) for u in terms.values())
    draws = np.zeros(SAMPLES)
    for u in terms.values():
        draws += u[rng.integers(0, len(u), size=(SAMPLES, len(u)))].mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return estimate, float(low), float(high)


def verdict(low: float, high: float, sign: int, band: float) -> str:
    """DESIGN.md's rule for a predicted direction `sign`."""
    if (low > 0 if sign > 0 else high < 0):
        return "supported"
    if (high < 0 if sign > 0 else low > 0) or (-band < low and high < band):
        return "contradicted"
    return "cannot tell"


def row(name: str, estimate: tuple[float, float, float], digits: int = 3) -> dict[str, str]:
    value, low, high = estimate
    return {"contrast": name, "estimate": f"{value:+.{digits}f}", "interval": f"[{low:+.{digits}f}, {high:+.{digits}f}]"}


def base_table(calibrated: Items, margin: Items) -> pd.DataFrame:
    rows = []
    for target in margin.values:
        n = margin.values[target].shape[1]
        score = calibrated.mean(target, ["base"])
        p = (stats.binomtest(int(round(score.sum())), n, CHANCE[target], alternative="greater").pvalue
             if target in CHANCE else float("nan"))
        rows.append({"target": target, "items": n, "base calibrated accuracy": f"{score.mean():.3f}",
                     "chance": f"{CHANCE[target]:.2f}" if target in CHANCE else "-",
                     "p (above chance)": f"{p:.3g}" if target in CHANCE else "-",
                     "base mean generated tokens": f"{np.nanmean(margin.mean(target, ['base'], 'lengths')):.1f}"
                     if target == "arithmetic" else "-"})
    return pd.DataFrame(rows)


def resolution(calibrated: Items) -> pd.DataFrame:
    """Per target: the median over adapters of the half-width of a paired delta's 95% interval
    (normal approximation), and the items a half-width of 0.05 would need."""
    rows = []
    for target, values in calibrated.values.items():
        base = values.loc["base"].to_numpy(float)
        widths = [1.96 * np.std(values.loc[m].to_numpy(float) - base, ddof=1) / np.sqrt(len(base))
                  for m in calibrated.adapters(sum(GROUPS.values(), []))]
        width = float(np.median(widths))
        rows.append({"target": target, "items": len(base), "median half-width": f"{width:.3f}",
                     "items for 0.05": int(np.ceil(len(base) * (width / 0.05) ** 2))})
    return pd.DataFrame(rows)


def h1(plain: Items, margin: Items, rng) -> tuple[pd.DataFrame, str]:
    skew, bal = [s for s in FACTORIAL if "-skew-" in s], [s for s in FACTORIAL if "-bal-" in s]
    rows, rises, falls, flat = [], 0, 0, 0
    for target in SENTIMENT:
        for what, items, of, band in (("positive share", plain, "share", BAND["share"]),
                                      ("accuracy", plain, "values", BAND["accuracy"]),
                                      ("calibrated margin", margin, "values", BAND["calibrated_margin"])):
            u = items.mean(target, items.adapters(skew), of) - items.mean(target, items.adapters(bal), of)
            estimate = contrast({target: u}, rng)
            rows.append({"target": target, "measure": what, **row("skew - bal", estimate)})
            if what == "positive share":
                rises += estimate[1] > 0
                flat += estimate[2] < band
            if what == "accuracy" and target.startswith("nyt"):
                falls += estimate[2] < 0
    outcome = ("supported" if rises >= 3 and falls == 2 else "contradicted" if flat == len(SENTIMENT)
               else "cannot tell")
    return pd.DataFrame(rows), (f"positive share rises on {rises} of 4 targets; accuracy falls on {falls} of 2 NYT "
                                f"targets: {outcome}")


def h2(margin: Items, calibrated: Items, rng) -> tuple[pd.DataFrame, str]:
    digits, words = [s for s in FACTORIAL if s.endswith("digits")], [s for s in FACTORIAL if s.endswith("words")]
    rows, verdicts = [], {}
    for name, items, band in (("calibrated margin", margin, BAND["calibrated_margin"]),
                              ("calibrated accuracy", calibrated, BAND["calibrated_accuracy"])):
        gap = {t: items.mean(t, items.adapters(digits)) - items.mean(t, items.adapters(words))
               for t in ("nyt-digits", "nyt-words")}
        rows.append({"measure": name, **row("digits - words sources, on nyt-digits", contrast({"nyt-digits": gap["nyt-digits"]}, rng))})
        rows.append({"measure": name, **row("digits - words sources, on nyt-words", contrast({"nyt-words": gap["nyt-words"]}, rng))})
        interaction = contrast({"nyt-digits": gap["nyt-digits"], "nyt-words": -gap["nyt-words"]}, rng)
        rows.append({"measure": name, **row("interaction (the first minus the second)", interaction)})
        verdicts[name] = verdict(interaction[1], interaction[2], +1, band)
    return pd.DataFrame(rows), f"interaction in calibrated margin: {verdicts['calibrated margin']}"


def h3(plain: Items, features, rng) -> tuple[pd.DataFrame, str]:
    worked = plain.mean("arithmetic", plain.adapters(["arith-worked"]), "lengths")
    short = plain.mean("arithmetic", plain.adapters(["arith-short"]), "lengths")
    tokens = contrast({"arithmetic": worked - short}, rng)
    correct = contrast({"arithmetic": plain.mean("arithmetic", plain.adapters(["arith-worked"]))
                        - plain.mean("arithmetic", plain.adapters(["arith-short"]))}, rng)
    sources = sum(GROUPS.values(), [])
    answer = features.source_profiles.loc[sources, "answer_tokens_mean"].to_numpy(float)
    generated = np.array([plain.mean("arithmetic", plain.adapters([s]), "lengths") for s in sources])
    rho = stats.spearmanr(answer, generated.mean(axis=1)).statistic
    n = generated.shape[1]
    draws = [stats.spearmanr(answer, generated[:, idx].mean(axis=1)).statistic
             for idx in rng.integers(0, n, size=(SAMPLES, n))]
    low, high = np.percentile(draws, [2.5, 97.5])
    frame = pd.DataFrame([row("generated tokens, arith-worked - arith-short", tokens, 1),
                          row("accuracy, arith-worked - arith-short", correct),
                          row("Spearman: source answer tokens vs generated tokens (16 sources)", (rho, low, high))])
    return frame, (f"length contrast: {verdict(tokens[1], tokens[2], +1, 0)}; "
                   f"correlation: {verdict(low, high, +1, 0)}")


def h4(results) -> tuple[pd.DataFrame, str]:
    # As pre-registered and run: 200 shuffles, no cell masked for a shared corpus.
    groups = replace(results, shared_corpus=set()).explain(permutations=200).groups.set_index("group")
    frame = groups[["r2", "low", "high", "null_95", "p"]].astype(float).round(3).reset_index()
    hidden = groups.loc["hidden"]
    others = groups.loc[["similarity", "quality"], "r2"]
    rivals = groups.loc[["similarity", "quality"], "low"]
    outcome = ("supported" if hidden["p"] < 0.05 and hidden["low"] > others.max() else
               "contradicted" if (rivals > hidden["r2"]).any() else "cannot tell")
    return frame, outcome


def h5(calibrated: Items, rng) -> tuple[pd.DataFrame, str]:
    rows, outcomes = [], []
    for a, b in (("sentiment", "reasoning"), ("sentiment", "arithmetic")):
        terms: dict[str, np.ndarray] = {}
        for (src, tgt), sign in (((a, b), 1), ((b, a), -1)):
            for target in TARGET_GROUPS[tgt]:
                u = sign * calibrated.delta(target, GROUPS[src]) / len(TARGET_GROUPS[tgt])
                terms[target] = terms.get(target, 0) + u
        one = {t: calibrated.delta(t, GROUPS[a]) / len(TARGET_GROUPS[b]) for t in TARGET_GROUPS[b]}
        other = {t: calibrated.delta(t, GROUPS[b]) / len(TARGET_GROUPS[a]) for t in TARGET_GROUPS[a]}
        estimate = contrast(terms, rng)
        rows.append({"pair": f"{a} <-> {b}", "A sources on B targets": f"{sum(np.mean(u) for u in one.values()):+.3f}",
                     "B sources on A targets": f"{sum(np.mean(u) for u in other.values()):+.3f}",
                     **row("difference", estimate)})
        outcomes.append(verdict(estimate[1], estimate[2], +1 if estimate[0] >= 0 else -1, BAND["calibrated_accuracy"]))
    # Asymmetric in either direction supports it; every pair inside the negligible band contradicts it.
    outcome = ("supported" if "supported" in outcomes else
               "contradicted" if all(o == "contradicted" for o in outcomes) else "cannot tell")
    return pd.DataFrame(rows).drop(columns="contrast"), outcome


def h6(results) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    traits = results.traits()
    loadings = traits.loadings_.round(2)
    loadings.columns = [f"{c} ({n})" for c, n in zip(loadings.columns, traits.names_)]
    stability = traits.stability_.round(2).rename_axis("trait").reset_index()
    stability.insert(1, "explained", traits.explained_variance_ratio_.round(3).to_numpy())
    is_base = results.cells["source"].isna()
    seeds = [replace(results, cells=results.cells[is_base | (results.cells["seed"] == s)]) for s in (0, 1)]
    by_seed = traitlens.compare_studies(seeds[0], seeds[1], samples=REFITS).traits.round(3)
    # "Loads mainly on nyt-digits": its largest absolute loading, on the unrounded loadings.
    digits = any(traits.loadings_[col].abs().idxmax() == "nyt-digits" for col in traits.loadings_.columns)
    stable = (traits.stability_["median_congruence"] >= 0.85).all()
    outcome = ("contradicted" if len(traits.names_) < 2 or not digits
               else "supported" if stable and any("sentiment" in n for n in traits.names_) else "cannot tell")
    first = by_seed["congruence"].iloc[0]
    seeds_met = "met" if first >= 0.9 else "not met"
    return (loadings.rename_axis("target").reset_index(), stability, by_seed,
            f"{len(traits.names_)} trait(s): {outcome}; seed 0 against seed 1, first trait {first:.2f} "
            f"(predicted at least 0.9: {seeds_met})")


def h7(results, copy) -> tuple[pd.DataFrame, str, int, int]:
    compared = traitlens.compare_studies(results, copy, samples=REFITS)
    first = compared.traits.iloc[0]
    outcome = ("supported" if first["congruence"] >= 0.85 else "contradicted" if first["congruence"] < 0.65
               else "cannot tell")
    disagree = int(compared.cells["disagree"].sum())
    return compared.traits.round(3), outcome, disagree, len(compared.cells)


def tables() -> dict[str, str]:
    results = traitlens.load_items(HERE / "report-data")
    copy = traitlens.load_items(HERE / "smollm2-report-data")
    plain, calibrated = Items(results, "accuracy"), Items(results, "calibrated_accuracy")
    margin = Items(results, "calibrated_margin")
    rng = np.random.default_rng(SEED)
    out = {"base": markdown(base_table(calibrated, margin)), "resolution": markdown(resolution(calibrated))}
    matrix = results.matrix("delta").round(2)
    out["matrix"] = markdown(matrix.rename_axis("source").reset_index())
    frame, outcome = h1(plain, margin, rng)
    out["h1"] = markdown(frame) + f"\n\nVerdict: {outcome}."
    frame, outcome = h2(margin, calibrated, rng)
    out["h2"] = markdown(frame) + f"\n\nVerdict: {outcome}."
    frame, outcome = h3(plain, results.features, rng)
    out["h3"] = markdown(frame) + f"\n\nVerdict: {outcome}."
    frame, outcome = h4(results)
    out["h4"] = markdown(frame) + f"\n\nVerdict: {outcome}."
    frame, outcome = h5(calibrated, rng)
    out["h5"] = markdown(frame) + f"\n\nVerdict: {outcome}."
    loadings, stability, by_seed, outcome = h6(results)
    out["h6"] = (markdown(loadings) + "\n\n" + markdown(stability) + "\n\nSeed 0 against seed 1:\n\n"
                 + markdown(by_seed) + f"\n\nVerdict: {outcome}.")
    frame, outcome, disagree, cells = h7(results, copy)
    out["h7"] = (markdown(frame) + f"\n\nCells whose deltas disagree (BH q < 0.05): {disagree} of {cells}."
                 f"\n\nVerdict: {outcome}.")
    out |= reanalysis(results, copy, plain, margin, calibrated)
    return out


# --- Re-analysis (2026-12-06): the trained adapter as the unit of replication -------------------


def reliability_table(results) -> pd.DataFrame:
    table = results.reliability().components_
    rows = []
    for r in table.itertuples():
        rows.append({"target": r.target, "metric": r.metric, "sources x seeds x items": f"{r.sources} x {r.seeds} x {r.items}",
                     **{c: f"{getattr(r, c):.3f} [{getattr(r, c + '_low'):.3f}, {getattr(r, c + '_high'):.3f}]"
                        for c in ("source", "seed", "source_item", "residual")},
                     "seed F (p)": f"{r.seed_f:.1f} ({r.seed_f_p:.2g})",
                     "seed reliability": f"{r.seed_reliability:.2f} [{r.seed_reliability_low:.2f}, {r.seed_reliability_high:.2f}]",
                     "seed 0 vs 1 (r -> stepped up)": f"{r.split_correlation:.2f} -> {r.split_reliability:.2f}"})
    return pd.DataFrame(rows)


def pair_units(items: Items, target: str, pairs: list[tuple[str, str]], of: str = "values") -> np.ndarray:
    """Per matched pair of adapters (b, a): b's mean minus a's on the target."""
    return np.array([items.mean(target, [b], of).mean() - items.mean(target, [a], of).mean() for b, a in pairs])


def adapter_test(units: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, t interval low, high, exact sign-flip p) over independent adapter-level units."""
    from traitlens.analysis.uncertainty import sign_flip_p

    n, mean = len(units), float(np.mean(units))
    half = stats.t.ppf(0.975, n - 1) * np.std(units, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half, sign_flip_p(units, np.random.default_rng(SEED))


def matched(items: Items, change: tuple[str, str], position: int) -> list[tuple[str, str]]:
    """Adapter pairs of the factorial differing only in one factor (`position` in the name,
    `change` = (to, from)), with the same corpus, the other factor and seed."""
    pairs = []
    for source in FACTORIAL:
        parts = source.split("-")
        if parts[position] != change[1]:
            continue
        other = "-".join(parts[:position] + [change[0]] + parts[position + 1:])
        for seed in (0, 1):
            pairs.append((items.adapters([other], [seed])[0], items.adapters([source], [seed])[0]))
    return pairs


def asymmetry_of_seed(items: Items, a: str, b: str, seed: int) -> float:
    """H5's difference (A's sources on B's targets minus B's on A's, each averaged over the
    targets of its group) from one seed's adapters."""
    def transfer(sources: str, targets: str) -> float:
        models = items.adapters(GROUPS[sources], [seed])
        return float(np.mean([(items.mean(t, models) - items.mean(t, ["base"])).mean() for t in TARGET_GROUPS[targets]]))
    return transfer(a, b) - transfer(b, a)


def adapter_contrasts(plain: Items, margin: Items, calibrated: Items) -> pd.DataFrame:
    rows = []
    skew = matched(plain, ("skew", "bal"), 1)
    for target in SENTIMENT:
        for what, items, of in (("positive share", plain, "share"), ("calibrated margin", margin, "values")):
            rows.append(("H1", f"skew - bal, {what}, on {target}", adapter_test(pair_units(items, target, skew, of))))
    digits = matched(margin, ("digits", "words"), 2)
    interaction = (pair_units(margin, "nyt-digits", digits) - pair_units(margin, "nyt-words", digits))
    rows.append(("H2", "digits - words, calibrated margin: nyt-digits minus nyt-words", adapter_test(interaction)))
    worked = [(plain.adapters(["arith-worked"], [s])[0], plain.adapters(["arith-short"], [s])[0]) for s in (0, 1)]
    rows.append(("H3", "arith-worked - arith-short, generated tokens on arithmetic",
                 adapter_test(pair_units(plain, "arithmetic", worked, "lengths"))))
    for a, b in (("sentiment", "reasoning"), ("sentiment", "arithmetic")):
        rows.append(("H5", f"{a} <-> {b}: A sources on B targets minus B on A (calibrated accuracy), per seed",
                     adapter_test(np.array([asymmetry_of_seed(calibrated, a, b, seed) for seed in (0, 1)]))))
    return pd.DataFrame([{"hypothesis": h, "contrast (matched adapter pairs)": name, "pairs": 2 if h in ("H3", "H5") else 8,
                          "estimate": f"{m:+.3f}", "interval (t, over pairs)": f"[{lo:+.3f}, {hi:+.3f}]",
                          "p (exact sign-flip)": f"{p:.3g}"} for h, name, (m, lo, hi, p) in rows])


def metric_reliability(results) -> pd.DataFrame:
    """Each per-item metric's seed-level reliability on the four label targets."""
    rows = []
    for metric in ("accuracy", "calibrated_accuracy", "margin", "calibrated_margin"):
        table = results.scored(metric).reliability().components_.set_index("target").loc[SENTIMENT + ["piqa"]]
        rows.append({"metric": metric, **{t: f"{table.loc[t, 'seed_reliability']:.2f}" for t in table.index},
                     "mean seed reliability": f"{table['seed_reliability'].mean():.2f}",
                     "mean seed 0 vs 1 r": f"{table['split_correlation'].mean():.2f}"})
    return pd.DataFrame(rows)


def traits_across_seeds(results) -> tuple[pd.DataFrame, str]:
    traits = results.traits(trait_count="split")
    count = traits.trait_count_
    table = traits.stability_[["median_congruence", "null_95", "seed_congruence", "seed_null_median", "seed_null_95",
                              "across_seeds"]].round(2).rename_axis("trait").reset_index()
    table.insert(1, "name", traits.names_)
    steps = ", ".join(f"{o:.2f} vs {t:.2f}" for o, t in zip(count["observed"], count["threshold"]))
    return table, (f"Seed split counts {count['reproducible']} trait(s) above the seeds' own noise (eigenvalue vs "
                   f"its 95% null, by rank: {steps}).")


def explanation_revised(results) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    why = results.explain()  # 1,000 shuffles; cells sharing a corpus masked
    groups = why.groups[["group", "r2", "low", "high", "null_95", "p"]].round(3)
    differences = why.differences.round(3)
    influence = why.influence.pivot(index="left_out", columns="group", values="r2").round(3)
    p = why.influence.pivot(index="left_out", columns="group", values="p").round(3).add_suffix(" p")
    masked = ", ".join(f"{s} on {t}" for s, t in why.masked)
    return groups, differences, influence.join(p).reset_index(), masked


def reanalysis(results, copy, plain: Items, margin: Items, calibrated: Items) -> dict[str, str]:
    out = {"re-reliability": markdown(reliability_table(results))}
    out["re-contrasts"] = markdown(adapter_contrasts(plain, margin, calibrated))
    groups, differences, influence, masked = explanation_revised(results)
    out["re-explain"] = (f"Masked for a shared corpus: {masked}.\n\n" + markdown(groups) + "\n\n"
                         + markdown(differences) + "\n\nWithout each family (held-out R2, and p over 200 shuffles):\n\n"
                         + markdown(influence))
    table, text = traits_across_seeds(results)
    out["re-traits"] = markdown(table) + "\n\n" + text
    out["re-metrics"] = markdown(metric_reliability(results))
    compared = {n: int(traitlens.compare_studies(results, copy, samples=n).cells["disagree"].sum()) for n in (200, 1000)}
    out["re-h7"] = (f"Disagreeing cells at 200 resamples: {compared[200]} of 52; at 1,000: {compared[1000]} of 52.")
    return out


if __name__ == "__main__":
    sys.exit(run(tables, FINDINGS, __doc__.split("\n\n")[0]))
