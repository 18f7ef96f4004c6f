"""Every table in FINDINGS.md, recomputed from the committed item-level export (`report-data/`)
and the pilot's data (`pilot/pilot-data/`) with no model and no store. The hypotheses and their
verdict rules are DESIGN.md's.

    .venv/bin/python studies/replication/reproduce.py          # print every table
    .venv/bin/python studies/replication/reproduce.py --write  # refresh FINDINGS.md's tables

FINDINGS.md holds each table between `<!-- reproduce:NAME -->` and `<!-- /reproduce -->`;
tests/test_studies.py checks that the committed tables equal what this script prints.

Every number is in calibrated margin (nats) unless a table says otherwise. The unit of
replication is the trained adapter: contrasts average each matched pair of sources over its
three seeds (paired by seed) and its items, then test over the pairs, so their intervals count
sources, seeds and items.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import traitlens
from traitlens.analysis.uncertainty import sign_flip_p

HERE = Path(__file__).resolve().parent
FINDINGS = HERE / "FINDINGS.md"
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "benchmarks")]  # neither is a package
import forecast as forecast_benchmark  # noqa: E402
from findings import main as run, markdown  # noqa: E402

SEED, DRAWS = 0, 2000
BAND = 0.1  # DESIGN.md's negligible band, in nats
GOAL = 0.7  # H1: seed-split reliability a target must reach
DESIGN = (36, 3, 100)  # the pilot's grid row this study ran: steps, seeds, items
CORPORA, BALANCE, FORMAT = ("movie", "tweets", "amazon"), ("bal", "skew"), ("words", "digits")
BINARY = ["movie", "amazon", "tweets", "nyt"]


def interval(value: float, low: float, high: float, digits: int = 2, signed: bool = False) -> str:
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


class Adapters:
    """Each adapter's mean item value per target (`items`: one row per model, target and item),
    and the base's."""

    def __init__(self, items: pd.DataFrame):
        means = items.groupby(["model", "target"])["value"].mean().unstack("target")
        models = items.drop_duplicates("model").set_index("model")[["source", "seed"]]
        self.base = means.loc["base"]
        self.means = means.drop(index="base").join(models)

    def of(self, source: str, target: str) -> pd.Series:
        """`source`'s adapters on `target`, by seed."""
        rows = self.means[self.means["source"] == source]
        return rows.set_index("seed")[target].sort_index()

    def table(self, target: str) -> pd.DataFrame:
        """Sources x seeds on `target`."""
        return self.means.pivot(index="source", columns="seed", values=target)


def base_table(results) -> pd.DataFrame:
    items = results.scored("calibrated_accuracy").items
    rows = []
    for target, group in items[items["model"] == "base"].groupby("target"):
        n, correct = len(group), int(round(group["value"].sum()))
        chance = 1 / len(results.labels[target])
        p = stats.binomtest(correct, n, chance, alternative="greater").pvalue
        rows.append({"target": target, "items": n, "base calibrated accuracy": f"{correct / n:.2f}",
                     "chance": f"{chance:.2f}", "p (above chance)": f"{p:.2g}"})
    return pd.DataFrame(rows)


def split_reliability(cells: np.ndarray) -> float:
    """The seeds' mean pairwise Pearson correlation of source means, stepped up to all seeds."""
    seeds = cells.shape[1]
    r = np.nanmean([np.corrcoef(cells[:, a], cells[:, b])[0, 1]
                    for a in range(seeds) for b in range(a + 1, seeds)])
    return seeds * r / (1 + (seeds - 1) * r) if 1 + (seeds - 1) * r > 0 else float("nan")


def h1(adapters: Adapters, components: pd.DataFrame, diagonal: set) -> tuple[pd.DataFrame, str]:
    """DESIGN.md's statistic over all 16 sources, and beside it over the sources the analysis
    keeps (cells of a source trained on the target's own dataset masked, as `traitlens
    reliability` counts them): DESIGN.md names both, and they differ on movie, amazon, tweets."""
    rng = np.random.default_rng(SEED)
    rows, replicated = [], {"all": 0, "masked": 0}
    for target in components["target"]:
        row = {"target": target}
        for which, table in (("all", adapters.table(target)),
                             ("masked", adapters.table(target).drop(index=[s for s, t in diagonal if t == target]))):
            cells = table.to_numpy(float)
            observed = split_reliability(cells)
            null = [split_reliability(np.column_stack([rng.permutation(c) for c in cells.T])) for _ in range(DRAWS)]
            boot = [split_reliability(cells[rng.integers(0, len(cells), len(cells))]) for _ in range(DRAWS)]
            null_95 = float(np.nanquantile(null, 0.95))
            ok = observed >= GOAL and observed > null_95
            replicated[which] += ok
            label = "16 sources" if which == "all" else "sources the analysis keeps"
            row[f"{label}: seed-split reliability [sources resampled]"] = (
                f"{interval(observed, *np.nanquantile(boot, [0.025, 0.975]))} ({len(cells)})")
            row[f"{label}: chance (95th pct)"] = f"{null_95:.2f}"
            row[f"{label}: replicates"] = "yes" if ok else "no"
        rows.append(row)
    verdict = lambda n: "supported" if n >= 4 else "contradicted" if n <= 2 else "cannot tell"
    return pd.DataFrame(rows), (f"over 16 sources, {replicated['all']} of {len(rows)} targets replicate: "
                                f"{verdict(replicated['all'])}; over the sources the analysis keeps, "
                                f"{replicated['masked']} of {len(rows)}: {verdict(replicated['masked'])}")


def within_format(adapters: Adapters, targets: list[str], diagonal: set) -> pd.DataFrame:
    """Exploratory: the seed-split reliability among the word-label sentiment sources alone (the
    sources the analysis keeps), so the label-format split, which dominates the matrix, cannot
    carry it."""
    rng = np.random.default_rng(SEED)
    words = [f"{c}-{b}-words" for c in CORPORA for b in BALANCE]
    rows = []
    for target in targets:
        cells = adapters.table(target).loc[[w for w in words if (w, target) not in diagonal]].to_numpy(float)
        null = [split_reliability(np.column_stack([rng.permutation(c) for c in cells.T])) for _ in range(DRAWS)]
        rows.append({"target": target, "word-label sources": len(cells),
                     "seed-split reliability": f"{split_reliability(cells):.2f}",
                     "chance (95th pct)": f"{np.nanquantile(null, 0.95):.2f}"})
    return pd.DataFrame(rows)


def h1b(components: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    designs = pd.read_csv(HERE / "pilot" / "pilot-data" / "designs.csv")
    steps, seeds, items = DESIGN
    projected = designs.query("steps == @steps and seeds == @seeds and items == @items").set_index("target")
    rows, held = [], 0
    for r in components.itertuples():
        expected = float(projected.loc[r.target, "reliability"])
        inside = r.reliability_low <= expected <= r.reliability_high
        held += inside
        rows.append({"target": r.target, "projected (pilot)": f"{expected:.2f}",
                     "achieved [G-study interval]": interval(r.reliability, r.reliability_low, r.reliability_high),
                     "error (achieved - projected)": f"{r.reliability - expected:+.2f}",
                     "projection held": "yes" if inside else "no"})
    return pd.DataFrame(rows), f"the projection held on {held} of {len(rows)} targets"


def pair_test(units: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, t interval, exact sign-flip p) over independent units."""
    n, mean = len(units), float(np.mean(units))
    half = stats.t.ppf(0.975, n - 1) * np.std(units, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half, sign_flip_p(units, np.random.default_rng(SEED))


def matched_units(adapters: Adapters, factor: str, change: tuple[str, str], targets: list[str]) -> np.ndarray:
    """Per matched pair of sources differing only in `factor` ("balance" or "format"; `change`:
    (to, from)), same corpus and other factor: to minus from, paired by seed, averaged over the
    seeds and `targets`."""
    units = []
    for corpus in CORPORA:
        for other in (FORMAT if factor == "balance" else BALANCE):
            name = (lambda level: f"{corpus}-{level}-{other}") if factor == "balance" else \
                (lambda level: f"{corpus}-{other}-{level}")
            units.append(np.mean([(adapters.of(name(change[0]), t) - adapters.of(name(change[1]), t)).mean()
                                  for t in targets]))
    return np.array(units)


def similarity_units(adapters: Adapters) -> np.ndarray:
    """Per corpus target and design cell: the target corpus's source minus the mean of the other
    corpora's sources in the same cell, paired by seed, averaged over seeds."""
    units = []
    for corpus in CORPORA:
        for balance in BALANCE:
            for fmt in FORMAT:
                own = adapters.of(f"{corpus}-{balance}-{fmt}", corpus)
                others = [adapters.of(f"{c}-{balance}-{fmt}", corpus) for c in CORPORA if c != corpus]
                units.append((own - sum(others) / len(others)).mean())
    return np.array(units)


def contrasts(adapters: Adapters, share: Adapters) -> tuple[pd.DataFrame, dict[str, str]]:
    tests = {
        "H2": ("skew - bal, on the 4 binary targets", matched_units(adapters, "balance", ("skew", "bal"), BINARY), 0),
        "H2 (secondary)": ("skew - bal, positive-prediction share, on the 4 binary targets",
                           matched_units(share, "balance", ("skew", "bal"), BINARY), None),
        "H3": ("words - digits, on the 5 targets",
               matched_units(adapters, "format", ("words", "digits"), list(adapters.base.index)), +1),
        "H4": ("own corpus - other corpora, same design cell, on movie, amazon, tweets", similarity_units(adapters), +1),
    }
    rows, verdicts = [], {}
    for name, (what, units, sign) in tests.items():
        mean, low, high, p = pair_test(units)
        rows.append({"hypothesis": name, "contrast": what, "units": len(units),
                     "estimate [t interval over units]": interval(mean, low, high, 3, True), "p (sign-flip)": f"{p:.3g}"})
        if sign == 0:  # predicted: no effect
            verdicts[name] = ("supported" if -BAND < low and high < BAND else "contradicted" if low > 0 or high < 0
                              else "cannot tell")
        elif sign is not None:
            verdicts[name] = ("supported" if low > 0 else "contradicted" if high < 0 or (-BAND < low and high < BAND)
                              else "cannot tell")
    return pd.DataFrame(rows), verdicts


def h5(results) -> tuple[pd.DataFrame, str]:
    why = results.explain(permutations=1000)
    groups = why.groups.set_index("group")
    frame = groups[["r2", "low", "high", "null_95", "p"]].astype(float).round(3).reset_index()
    explains = {g: bool(groups.loc[g, "p"] < 0.05) for g in ("hidden", "similarity")}
    outcome = ("contradicted" if not any(explains.values()) else "cannot tell" if all(explains.values())
               else "supported")
    masked = ", ".join(f"{s} on {t}" for s, t in why.masked) or "none"
    said = "; ".join(f"{g}: {'explains' if e else 'does not explain'}" for g, e in explains.items())
    return frame, f"{said}: {outcome}. Masked for a shared corpus: {masked}."


def h6(results) -> tuple[pd.DataFrame, str]:
    traits = results.traits()
    count = traits.trait_count_
    table = traits.stability_[["median_congruence", "null_95", "seed_congruence", "seed_null_95"]].round(2)
    table.insert(0, "name", traits.names_)
    table.insert(1, "explained", traits.explained_variance_ratio_.round(3).to_numpy())
    n = len(traits.names_)
    first = table.iloc[0] if n else None
    if n == 0 or first["seed_congruence"] <= first["seed_null_95"]:
        outcome = "contradicted"
    elif n == 1 and first["name"].startswith("sentiment"):
        outcome = "supported"
    else:
        outcome = "cannot tell"
    return (table.rename_axis("trait").reset_index(),
            f"the seed split counts {n} trait(s) ({count.get('method')}): {outcome}")


def components_table(components: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "target": r.target, "sources x seeds x items": f"{r.sources} x {r.seeds} x {r.items}",
        **{c: interval(getattr(r, c), getattr(r, f"{c}_low"), getattr(r, f"{c}_high"), 4)
           for c in ("source", "seed", "source_item", "residual")},
        "seed F (p)": f"{r.seed_f:.1f} ({r.seed_f_p:.2g})",
        "seed reliability": interval(r.seed_reliability, r.seed_reliability_low, r.seed_reliability_high)}
        for r in components.itertuples()])


def forecast_table() -> tuple[pd.DataFrame, str]:
    study = forecast_benchmark.load(HERE / "report-data")
    table = forecast_benchmark.score(study)
    shown = table[["forecast", "spent", "spearman (all cells)", "spearman (median over targets)", "top-1 regret"]]
    ceiling = table.loc[table["forecast"].str.startswith("ceiling"), "spearman (all cells)"].iloc[0]
    forecasts = table[~table["forecast"].str.contains("reference|ceiling|zeros|target means")]
    best = forecasts.loc[forecasts["spearman (all cells)"].idxmax()]
    return shown.astype(object).fillna("-"), (f"best forecast: {best['forecast']} at Spearman {best['spearman (all cells)']:.3f}, "
                               f"{ceiling - best['spearman (all cells)']:.3f} below the ceiling ({ceiling:.3f})")


def tables() -> dict[str, str]:
    results = traitlens.load_items(HERE / "report-data")
    items = results.items
    adapters = Adapters(items)
    share = Adapters(items.assign(value=(items["prediction"] == "positive").astype(float)))
    components = results.reliability().components_
    out = {"base": markdown(base_table(results))}
    out["own-task"] = markdown(results.traits().own_task.round(3))
    out["matrix"] = markdown(results.matrix("delta").round(2).rename_axis("source").reset_index())
    frame, text = h1(adapters, components, results.diagonal)
    out["h1"] = markdown(frame) + f"\n\nVerdict: {text}."
    out["h1-within"] = markdown(within_format(adapters, list(components["target"]), results.diagonal))
    frame, text = h1b(components)
    out["h1b"] = markdown(frame) + f"\n\n{text[0].upper() + text[1:]}."
    frame, verdicts = contrasts(adapters, share)
    out["contrasts"] = markdown(frame) + "\n\n" + "; ".join(f"{h}: {v}" for h, v in verdicts.items()) + "."
    frame, text = h5(results)
    out["h5"] = markdown(frame) + f"\n\nVerdict: {text}"
    frame, text = h6(results)
    out["h6"] = markdown(frame) + f"\n\nVerdict: {text}."
    out["components"] = markdown(components_table(components))
    frame, text = forecast_table()
    out["forecast"] = markdown(frame) + f"\n\n{text[0].upper() + text[1:]}."
    return out


if __name__ == "__main__":
    sys.exit(run(tables, FINDINGS, __doc__.split("\n\n")[0]))
