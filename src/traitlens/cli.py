"""The `traitlens` command: thin wrappers over the public API, one function per subcommand."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import warnings
from pathlib import Path

import click
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from traitlens.version import __version__
from traitlens.analysis.metrics import DESCRIPTIONS, METRICS
from traitlens.config.schema import Analysis, DatasetSpec
from traitlens.data.catalog import CATALOG
from traitlens.errors import TraitlensError, TraitlensWarning
from traitlens.report.page import reliability_summary, trait_count_text

console = Console(highlight=False)
if not console.is_terminal and "COLUMNS" not in os.environ:
    # Off a terminal rich assumes 80 columns, which cuts a study's matrix in a log file.
    console.width = 160
STATE_STYLE = {"done": "green", "failed": "red", "running": "yellow", "new": "cyan"}
STUDY_ARG = click.argument("study_file", metavar="STUDY.yaml",
                           type=click.Path(dir_okay=False, path_type=Path))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="traitlens")
def cli() -> None:
    """Which of your training datasets help or hurt which capabilities, and why.

    traitlens fine-tunes one LoRA adapter per source dataset, evaluates the base model and every
    adapter on every target task (the transfer matrix), finds the latent traits behind it and
    explains them. A study is one YAML file; see examples/quickstart.yaml.
    """


@cli.command()
@STUDY_ARG
@click.option("--schema-only", is_flag=True,
              help="Check the file only; do not load the datasets (faster, but misses data problems).")
def validate(study_file: Path, schema_only: bool) -> None:
    """Check a study file and its data, reporting every problem at once.

    Exits 0 when the study is valid, 2 when it is not, listing each problem with its file, line,
    field, what is wrong and how to fix it. Unless --schema-only, also loads every source and
    target (columns, splits, label sets, transforms, multiple-choice answers among their options,
    no evaluation item in any source's training data) and checks that the base model exists and
    has every LoRA target module. --schema-only checks the file alone, in about a second.
    """
    study = _load(study_file)
    study.validate(data=not schema_only)  # the file alone needs no torch, model or data
    config = study.config
    adapters = len(config.sources) * len(config.training.seeds)
    console.print(f"[green]ok[/]: study [bold]{config.name}[/] - base {config.base.name}, "
                  f"{len(config.sources)} sources x {len(config.training.seeds)} seed(s), "
                  f"{len(config.targets)} targets: {adapters} training and "
                  f"{(adapters + 1) * len(config.targets)} evaluation jobs.")


@cli.command()
@STUDY_ARG
@click.option("--cost", "show_cost", is_flag=True,
              help="Also count the study's compute in tokens through the model, per source and per target "
                   "(reads the datasets and the base's tokenizer).")
def plan(study_file: Path, show_cost: bool) -> None:
    """List the jobs a run would execute and which are already in the store.

    One training job per source and seed, one evaluation job per model (the base and each
    adapter) and target. Jobs whose content key is already done in the store are not rerun.
    """
    study = _load(study_file)
    _print_plan(study)
    if show_cost:
        _print_cost(study.cost())


@cli.command()
@STUDY_ARG
@click.option("--dry-run", is_flag=True, help="Print the plan and stop without running anything.")
def run(study_file: Path, dry_run: bool) -> None:
    """Run a study: train missing adapters, evaluate missing cells, find the traits.

    Idempotent: jobs already in the store are skipped, so an interrupted run resumes where it
    stopped (training resumes from its last checkpoint), and a failed job is retried. Ends
    with the transfer matrix, its traits, and the path of the HTML report.
    """
    study = _load(study_file)
    if dry_run:
        study.validate()
        _print_plan(study)
        return
    summary = study.run(analyze=False)
    _print_matrix(study)
    if (end := study.conclude(summary)) is not None:
        _summarize(end, study_file)
    _finish(summary)


@cli.command()
@STUDY_ARG
@click.option("--source", "source_names", multiple=True, metavar="NAME",
              help="Train only this source (repeatable). Default: every source.")
@click.option("--seed", "seeds", multiple=True, type=int, metavar="N",
              help="Train only this seed (repeatable). Default: every seed of the study.")
def train(study_file: Path, source_names: tuple[str, ...], seeds: tuple[int, ...]) -> None:
    """Train the study's adapters that are not in the store yet, and nothing else.

    A run that was killed resumes from its last checkpoint; an adapter already trained with
    identical settings and data is never trained again.
    """
    _finish(_load(study_file).train(source_names, seeds))


def _summarize(end, study_file: Path) -> None:
    """The end of a run (`Study.conclude`): traits, the explanation's verdict, the report."""
    if end.skipped:
        console.print(f"[yellow]no analysis[/]: {end.skipped}")
        return
    traits, explained = end.traits, end.explanation
    _print_checks(traits)
    if traits.get("no_traits"):
        console.print(f"[yellow]no traits[/]: {traits['no_traits']}")
    for trait in traits["traits"]:
        across = (f", across seeds {trait['seed_congruence']:.2f}: {trait['across_seeds']}"
                  if trait.get("across_seeds") else "")
        console.print(f"{trait['trait']}: [bold]{trait['name']}[/], {trait['explained']:.0%} of variance, "
                      f"stability {trait['median_congruence']:.2f} over items, {trait['source_median']:.2f} over "
                      f"sources (chance reaches {trait['null_95']:.2f}){across} "
                      f"(`traitlens traits {study_file}` for details)")
    console.print(f"why: {explained['verdict']} (`traitlens explain {study_file}`)")
    if explained.get("recommendation_verdict"):
        console.print(f"recommendations: {explained['recommendation_verdict']}")
    console.print(f"report: {end.page}")


def _print_checks(analysis: dict) -> None:
    """The metric, and every diagnostic flag: what to know before reading the matrix."""
    metric = analysis["metric"]
    fallbacks = {t: m for t, m in analysis["used"].items() if m != metric}
    console.print(f"metric: [bold]{metric}[/], {DESCRIPTIONS[metric]}"
                  + (f" (without choice log-probabilities: {', '.join(f'{t} {m}' for t, m in fallbacks.items())})"
                     if fallbacks else ""))
    diagnostics = analysis["diagnostics"]
    for target in diagnostics["targets"]:
        for flag in target["flags"]:
            console.print(f"[yellow]check[/] {target['target']}: the base {flag}")
    for own in diagnostics["own_task"]:
        for flag in own["flags"]:
            console.print(f"[yellow]check[/] {own['source']} on its own task {own['target']}: {flag} "
                          f"({own['delta']:+.3f} [{own['low']:+.3f}, {own['high']:+.3f}])")
    reliability = reliability_summary(analysis.get("reliability", []))
    if reliability["one_seed"] or reliability["unreproduced"]:
        console.print(f"[yellow]check[/] {reliability['verdict']}")


def _finish(summary) -> None:
    console.print(f"{summary.done} jobs were already done, {summary.ran} ran now, "
                  f"{len(summary.failed)} failed"
                  + (f", {summary.blocked} evaluations wait for their adapter" if summary.blocked else "") + ".")
    for label, error in summary.failed:
        console.print(f"[red]failed[/] {label}: {error}")
    if summary.failed:
        raise TraitlensError(f"{len(summary.failed)} job(s) failed (recorded in the store); fix the "
                             "cause and rerun to retry them.")


@cli.command()
@STUDY_ARG
def status(study_file: Path) -> None:
    """Show what is done, running, failed and still to run, with the errors of failed jobs.

    A job shown as running while no process holds the store's lock was interrupted; the next
    run redoes it (training resumes from its last checkpoint).
    """
    study = _load(study_file)
    counts, jobs, holder = study.status(), study.plan(), study.in_use()
    table = Table(title=f"study {study.name}: status", title_justify="left")
    table.add_column("kind")
    for column in counts.columns:
        table.add_column(column, justify="right")
    for kind, row in counts.iterrows():
        table.add_row(kind, *map(str, row))
    console.print(table)
    for job in jobs.itertuples():
        if job.state == "failed":
            console.print(f"[red]failed[/] {job.label} (attempt {job.attempts}): {job.error}")
        elif job.state == "running":
            note = "in progress" if holder else "interrupted; the next run redoes it"
            console.print(f"[yellow]running[/] {job.label}: {note}")
    if holder:
        console.print(f"the store is in use: {holder}")


@cli.command()
@STUDY_ARG
@click.option("--repair", is_flag=True, help="Requeue damaged adapters, mark interrupted jobs failed, "
                                             "delete leftover scratch and checkpoint folders.")
def doctor(study_file: Path, repair: bool) -> None:
    """Check a study's store: the database's integrity, every adapter's files against the
    checksums recorded when they were written, interrupted jobs, leftover temporary folders.

    Exits 0 when the store is sound (or everything found was repaired), 1 otherwise. Holds the
    store's lock, so it refuses to run beside a `traitlens run`.
    """
    study = _load(study_file)
    try:
        findings, left = study.doctor(repair)
    except sqlite3.DatabaseError as exc:
        console.print(f"[yellow]database[/] {study.config.store / 'results.sqlite'}: cannot be read: {exc} (yours "
                      "to fix: move the store aside and rerun, or restore it from a backup)")
        raise SystemExit(1) from None
    for finding in findings:
        action = ("repaired: " + finding.repair) if repair and finding.repair else (
            f"--repair would {finding.repair}" if finding.repair else "yours to fix")
        console.print(f"[yellow]{finding.kind}[/] {finding.subject}: {finding.problem} ({action})")
    if not findings:
        console.print(f"store {study.config.store}: sound (database, adapters, jobs, temporary folders). Not "
                      "checked: the scores in cells and items, which are trusted as the database holds them "
                      "(docs/reliability.md).")
    elif left:
        raise SystemExit(1)


@cli.command()
@STUDY_ARG
def traits(study_file: Path) -> None:
    """Find the latent traits behind a study's transfer matrix.

    Uses the finished cells in the store (run the study first): the metric, matrix view,
    method, rotation and number of traits come from the study's `analysis:` section. Prints the
    metric and the diagnostics (targets where the base answers one label or sits at chance,
    adapters that did not learn their own task), how the trait count was chosen, each trait's
    name, explained variance and stability (over items and over sources), loadings, the
    sources' scores, significant side effects and asymmetries with intervals, and stores the
    result for the report.
    """
    study = _load(study_file)
    _print_traits(study.traits(), study.config.analysis)


def _print_traits(result, settings: Analysis) -> None:
    _print_checks(result.to_json())
    if result.no_traits:  # the effects below still stand
        console.print(f"[yellow]no traits[/]: {result.no_traits}")
    else:
        _print_trait_tables(result, settings)
    if len(result.side_effects):
        console.print("[bold]side effects[/] (significantly worse than the base):")
        for row in result.side_effects.itertuples():
            console.print(f"  {row.model} on {row.target}: {row.delta:+.3f} [{row.low:+.3f}, {row.high:+.3f}], q={row.q:.3g}")
    else:
        console.print(f"no significant negative transfer at q < {settings.alpha}.")
    for row in result.asymmetry.itertuples():
        console.print(f"asymmetry {row.a} -> {row.b}: {row.a_to_b:+.3f}, {row.b} -> {row.a}: {row.b_to_a:+.3f}, "
                      f"difference {row.difference:+.3f} [{row.low:+.3f}, {row.high:+.3f}], p={row.p:.3g}")
    if result.dropped:
        console.print(f"[yellow]left out[/] (missing cells, or no variation): {', '.join(result.dropped)}")


def _print_trait_tables(result, settings) -> None:
    console.print(f"[bold]{len(result.names_)} trait(s)[/] from {settings.method} ({settings.rotation}) on "
                  f"the {settings.view} matrix of {len(result.matrix)} sources x {result.matrix.shape[1]} targets"
                  + (" (diagonal masked)" if settings.mask_diagonal else "")
                  + ("" if settings.standardize else ", targets not standardised") + ".")
    if result.trait_count_.get("method") != "fixed":
        console.print(f"count: {trait_count_text(result.trait_count_)}")
    for trait, name in zip(result.loadings_.columns, result.names_):
        stable = result.stability_.loc[trait]
        across = (f"; across seeds {stable['seed_congruence']:.2f} (chance 95%: {stable['seed_null_95']:.2f}): "
                  f"{stable['across_seeds']}" if "across_seeds" in stable else "; across seeds: one seed, not measured")
        console.print(f"  {trait}: [bold]{name}[/] - {result.explained_variance_ratio_[trait]:.0%} of variance; median congruence "
                      f"{stable['median_congruence']:.2f} over items, {stable['source_median']:.2f} over sources, "
                      f"leaving one source out lowest {stable['loso_min']:.2f}; chance for this shape "
                      f"{stable['null_median']:.2f} (95%: {stable['null_95']:.2f}), refits above it "
                      f"{stable['share_above_null']:.0%} over items, {stable['source_share_above_null']:.0%} over "
                      f"sources{across}")
    for title, frame in (("loadings (targets x traits)", result.loadings_),
                         ("scores (sources x traits)", result.scores_)):
        console.print(title)  # not a table title: rich wraps those to a narrow table's width
        table = Table()
        table.add_column("")
        for column in frame.columns:
            table.add_column(column, justify="right")
        for row, values in frame.iterrows():
            table.add_row(str(row), *(f"{v:+.2f}" for v in values))
        console.print(table)


@cli.command()
@STUDY_ARG
@click.option("--goal", default=0.8, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The ranking reliability a design should reach.")
@click.option("--unpriced", is_flag=True, help="Price designs as seeds x items instead of counting their compute "
                                               "(which reads the datasets and the tokenizer).")
def reliability(study_file: Path, goal: float, unpriced: bool) -> None:
    """How reliable the transfer matrix is, and the seeds and items a study would need.

    From the stored items of a finished study: per target, the variance of the cells split into
    source, seed (training noise), item, source x item and residual, with intervals; the
    reliability of each target's ranking of sources, for a study with new adapters and items
    and for one with new adapters on the same items; with two or more seeds, the observed
    agreement of seeds. Then the projection to other designs (seeds x items per target) and the
    least costly design reaching GOAL, its compute as a share of this study's.
    """
    study = _load(study_file)
    result = study.reliability(goal, priced=not unpriced)
    from traitlens.analysis.plain import json_ready

    summary = reliability_summary(json_ready(result.components_.to_dict("records")))  # as stored: NaN as None
    console.print(summary["verdict"])
    _print_frame("variance components and reliability per target",
                 pd.DataFrame(summary["rows"]).fillna("").set_index("target"))
    if not len(result.designs_):
        console.print("no projection to other designs: with one seed per source the training noise, which more "
                      "seeds would average away, is not measured. Run two or more seeds (training.seeds).")
    else:
        shown = result.designs_.rename(columns={"cost": "cost (share of this study)" if not unpriced else "seeds x items"})
        _print_frame(f"least costly design reaching {goal} (reliability: new adapters and new items)",
                     shown.round(3).astype(str).set_index("target"))


@cli.command()
@STUDY_ARG
@click.option("--top", default=12, show_default=True, help="Feature correlations to print.")
def explain(study_file: Path, top: int) -> None:
    """Which features explain transfer, and does any feature group predict it beyond chance?

    Profiles every source and target, then gives every (source, target) cell a few declared
    features per group: hidden (label overlap, label format and task match, label-prior
    divergence, answer-length ratio), profile (the source's class entropy, answer length,
    lexical diversity), similarity (sentence-embedding, TF-IDF and vocabulary similarity) and
    quality (duplicates, base-model perplexity of its answers, relative to the target's). Reports
    Spearman correlations with transfer and with the trait scores (intervals from resampling
    sources), and each group's held-out R2 over a target-mean baseline with whole source
    families held out, the ridge penalty chosen by nested cross-validation, an interval over
    families and a permutation null (what chance reaches). Also scores the held-out
    recommendations against trivial rankings. Results are stored for the report.
    """
    study = _load(study_file)
    result = study.explain()
    console.print(f"[bold]verdict[/]: {result.verdict}")
    console.print(f"[bold]recommendations[/]: {result.recommendation_verdict}")
    _print_frame("held-out ranking quality by method (regret in target spreads; NDCG@3)",
                 result.recommendation_quality.set_index("method"))
    if not result.groups.empty:
        _print_frame("feature groups: held-out R2 over the target-mean baseline, leaving one source family out "
                     "(95% interval; null_95: what chance reaches in 95% of source shuffles)",
                     result.groups.set_index(["group", "features"]))
    shown = result.correlations.head(top).set_index(["feature", "outcome"])[["rho", "low", "high"]]
    _print_frame(f"strongest correlations (Spearman rho, 95% interval), top {top}", shown)
    _print_frame("source profiles", study.results().features.source_profiles[["size", "n_classes", "class_entropy_norm",
                                                     "answer_tokens_mean", "input_tokens_mean", "mtld",
                                                     "readability", "answer_perplexity"]])


@cli.command()
@STUDY_ARG
@click.option("--target", "target_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file with one target spec (as under `targets:`) to rank the study's sources for.")
@click.option("--source", "source_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file with one source spec (as under `sources:`) to rank the study's targets for.")
def recommend(study_file: Path, target_file: Path | None, source_file: Path | None) -> None:
    """Predict transfer for a dataset that is not in the matrix, before training anything.

    With --target: which of the study's sources would help that target most. With --source:
    which of the study's targets that source would help. The prediction is a ridge model on the
    source, target and pair features (profiles, similarities, quality) fitted to the study's
    cells; its ranking quality is measured on the study itself by holding out each existing
    target (or source) in turn.
    """
    study = _load(study_file)  # a missing study file is the first thing to say
    if (target_file is None) == (source_file is None):
        raise TraitlensError("give exactly one of --target SPEC.yaml or --source SPEC.yaml.")
    recommendation = study.recommend(target=target_file, source=source_file)
    by, ranking, quality, name = recommendation.by, recommendation.ranking, recommendation.quality, recommendation.name
    other = "sources" if by == "target" else "targets"
    if recommendation.forecast_cells:
        console.print(f"{recommendation.forecast_cells} of the cells it was fitted on are forecasts "
                      "(`traitlens forecast`), not measurements.")
    _print_frame(f"{other} ranked by predicted transfer {'to' if by == 'target' else 'from'} {name}",
                 ranking.set_index("source" if by == "target" else "target"))
    if quality.empty:
        console.print("ranking quality: too few cells to hold any out.")
    else:
        _print_frame(f"ranking quality: Spearman of predicted vs observed transfer, each {by} held out",
                     quality.set_index(by))
        console.print(f"mean held-out Spearman: {quality['spearman'].mean():+.2f} over {len(quality)} {by}s"
                      + (" (too few to trust)" if len(quality) < 5 else ""))


@cli.command("compare-cells")
@STUDY_ARG
@click.argument("a")
@click.argument("b")
@click.option("--target", required=True, help="The target both are scored on.")
@click.option("--metric", type=click.Choice(METRICS), help="Default: the study's analysis.metric.")
def compare_cells(study_file: Path, a: str, b: str, target: str, metric: str | None) -> None:
    """Test whether B scores differently from A on one target (B minus A), item by item.

    A and B are sources (their seeds averaged, and resampled in the interval), single adapters
    ("movie/s1") or "base": the test for designed contrasts such as a balanced vs a skewed
    variant of one corpus. Paired over the target's items: McNemar's exact test for 0/1 scores,
    a sign-flip test for margins, a swap permutation test for balanced accuracy and macro-F1,
    and a hierarchical bootstrap when a side has several seeds. In Python: `Study.compare`.
    """
    row = _load(study_file).compare(a, b, target, metric)
    console.print(f"{b} - {a} on {target} ({row.metric}, {row.items} items): {row.difference:+.3f} "
                  f"[{row.low:+.3f}, {row.high:+.3f}], p={row.p:.3g} "
                  f"({a} {row.a_score:.3f}, {row.seeds_a} seed(s); {b} {row.b_score:.3f}, "
                  f"{row.seeds_b} seed(s))")


@cli.command("compare")
@click.argument("study_a", metavar="A.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("study_b", metavar="B.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--samples", type=click.IntRange(min=1), help="Item resamples for the intervals. Default: A's "
                                                             "analysis.bootstrap_samples.")
def compare(study_a: Path, study_b: Path, samples: int | None) -> None:
    """Compare two finished studies: the same design under two seeds, settings or base models.

    Fits each study's traits on the sources and targets both have (matched by name; B at A's
    trait count), matches B's traits to A's and prints their Tucker congruence with an interval
    from resampling every target's items, the loadings that differ, and the cells whose
    deltas disagree (BH q < alpha). In Python: `traitlens.compare_studies`.
    """
    from traitlens.api import compare_studies
    from traitlens.progress import working

    with working(console, "comparison: traits of both studies, item resamples"):
        result = compare_studies(_load(study_a), _load(study_b), samples)
    console.print(f"{len(result.sources)} shared sources x {len(result.targets)} shared targets; "
                  f"{int(result.traits['refits'].iloc[0])} resamples")
    for row in result.traits.itertuples():
        console.print(f"{row.trait_a}: A [bold]{row.name_a}[/] ~ B [bold]{row.name_b}[/]: congruence "
                      f"{row.congruence:.2f} [{row.low:.2f}, {row.high:.2f}]; chance for this shape "
                      f"{row.null_median:.2f} (95%: {row.null_95:.2f}): {row.verdict}")
    differ = result.loadings[(result.loadings["low"] > 0) | (result.loadings["high"] < 0)]
    if len(differ):
        _print_frame("loadings that differ (A - B, interval excludes 0)",
                     differ.set_index(["trait", "target"])[["a", "b", "difference", "low", "high"]])
    disagree = result.cells[result.cells["disagree"]]
    console.print(f"{len(disagree)} of {len(result.cells)} shared cells disagree (delta A - delta B, q < alpha)")
    if len(disagree):
        _print_frame("cells that disagree", disagree.set_index(["source", "target"])[["a", "b", "difference", "q"]])


@cli.command("forecast")
@STUDY_ARG
@click.option("--budget", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Most of the full study's compute to spend, as a fraction of `traitlens plan --cost`'s count.")
@click.option("--probe", type=click.Choice(["short", "gradient", "combined"]), default="short", show_default=True,
              help="short: train briefly and extrapolate; gradient: gradient cosines on a fresh adapter, no training; "
                   "combined: this study's stored short and gradient forecasts, read by a ridge learned on finished "
                   "studies in the store.")
def forecast(study_file: Path, budget: float, probe: str) -> None:
    """Forecast the transfer matrix for a fraction of the study's compute.

    The short probe trains every adapter for a fraction of its steps (and for half of that),
    scores every target on a fraction of its items, and extrapolates each cell along its
    learning curve to the full step count; its runs are ordinary resumable runs into the
    study's store under their own keys. The gradient probe trains nothing: it scores each
    (source, target) pair by the cosine of their LoRA gradients, which ranks sources per target.
    The combination spends nothing more: it reads this study's stored short and gradient
    forecasts (those whose spend fits --budget) and the pairs' hidden statistics, through a
    ridge learned on the finished studies in the store that were forecast the same way.
    The forecast is stored in a table of its own: it never replaces a measured cell. Prints the
    compute spent and the forecast; when the full study is finished, also how well the
    forecast matches it.
    """
    study = _load(study_file)
    result = study.forecast(budget, probe)
    spent = f"spent {result.tokens:,} of {result.full_tokens:,} forward tokens ({result.spent:.1%})."
    if probe == "short":
        long = result.study.config
        steps = f"{long.training.max_steps}" + (f" and {result.short.config.training.max_steps}" if result.short else "")
        console.print(f"probe {result.study.name}: {steps} step(s) per adapter, "
                      + ", ".join(f"{t.name} {t.limit}" for t in long.targets) + " items; " + spent)
        _print_frame("forecast: delta vs base, extrapolated to the full step count" if result.short else
                     "forecast: delta vs base after the probe's steps (the budget paid for one length, no curve)",
                     result.delta)
    elif probe == "gradient":
        console.print(f"gradient probe: {spent}")
        _print_frame("forecast: gradient affinity (cosine; ranks the sources for each target)", result.delta)
    else:
        console.print("combination of " + ", ".join(f"{p} {b:g}" for p, b, _ in result.components)
                      + f" (their {spent[0].lower()}{spent[1:]}), learned on " + ", ".join(result.learned_on))
        _print_frame("forecast: delta vs base", result.delta)
    if result.low.isna().all().all():
        console.print("No intervals yet: they are calibrated on the forecasts of finished studies in this store "
                      "(`traitlens forecast` on a study, then `traitlens run` to finish it).")
    else:
        width = float((result.high - result.delta).stack().median())
        console.print(f"95% intervals: forecast +- {width:.3f}, calibrated on finished studies' forecasts.")
    quality = study.forecast_quality(result)
    if quality is None:
        console.print("The full study is not finished: run it to see how well the forecast matches.")
        return
    console.print(f"against the measured matrix: Spearman {quality.spearman:.2f} over all cells, "
                  f"{_num(quality.per_target['spearman'].median())} median per target (of 3 or more sources); top-1 regret "
                  f"{quality.regret:.3f}; trait congruence "
                  + (", ".join(f"{c:.2f} (chance 95%: {n:.2f})" for c, n in zip(quality.congruence,
                                                                               quality.congruence_null_95))
                     or "- (the measured matrix has no traits)"))


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of whole numbers, e.g. 8,24,64; got {value!r}") from None


@cli.command("pilot")
@STUDY_ARG
@click.option("--source", "sources", multiple=True, help="A source to pilot (repeat); default: spread-out sources "
                                                          "trained on a target's dataset, one family at a time.")
@click.option("--target", "targets", multiple=True, help="A target to score (repeat); default: the sources' own "
                                                          "targets, then targets of other abilities.")
@click.option("--lengths", callback=_int_list, help="Training lengths in optimizer steps, e.g. 8,24,64; default: a "
                                                     "quarter, one and three times the study's steps.")
@click.option("--seeds", callback=_int_list, help="Seeds per source and length, e.g. 0,1,2 (the default).")
@click.option("--items", type=click.IntRange(min=2), help="Items per target; default: each target's own limit.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Most the pilot may cost, as a share of the full study's compute (`traitlens plan --cost`); "
                   "above 1 when the study itself is small.")
@click.option("--goal", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.8, show_default=True,
              help="Reliability of each target's source ranking the recommended design must reach.")
@click.option("--study-budget", type=click.FloatRange(min=0, min_open=True),
              help="Most the recommended study may cost, as a share of the study as configured; default: no limit.")
@click.option("--streams", type=click.Choice(["shared", "per_source"]), default="shared", show_default=True,
              help="Seed streams of the pilot's adapters (training.seed_streams).")
@click.option("--out", type=click.Path(path_type=Path), help="The pilot's page (its data beside it in <name>-data/); "
                                                             "default: report/<study>-pilot.html in the store.")
def pilot(study_file: Path, sources: tuple[str, ...], targets: tuple[str, ...], lengths: list[int] | None,
          seeds: list[int] | None, items: int | None, budget: float, goal: float, study_budget: float | None,
          streams: str, out: Path | None) -> None:
    """Size the study before paying for it: train a few sources at several lengths and seeds.

    The pilot scores them on a sample of targets and measures, per length, whether each source
    learned its own task (seed-level interval) and how far its validation loss fell, and the
    variance components (source, seed, item). It recommends the training length, seeds and
    items per target that reach --goal reliability of every target's source ranking at the least
    compute, or says that no design does and what it would cost. Its parts are ordinary
    resumable runs into the study's store; rerunning the command trains nothing twice.
    """
    study = _load(study_file)
    result = study.pilot(list(sources) or None, list(targets) or None, lengths, seeds, items, budget, goal,
                         study_budget, streams, out)
    _print_frame("by training length", result.lengths_.set_index("steps").round(4))
    if len(result.own_task_):
        own = result.own_task_.set_index(["steps", "source"])
        _print_frame("own-task gain (interval: seeds + items)",
                     own[["target", "delta", "low", "high", "validation_drop"]].round(4)
                     .assign(learned=own["learned"].map({True: "yes", False: "no"})))
    rec = result.recommendation
    if "steps" in rec:
        verdict = "reaches" if rec["reached"] else "does not reach"
        cost = f"{rec['cost']:.1f} times" if rec["cost"] >= 1 else f"{rec['cost']:.2f} of"
        console.print(f"recommended: {rec['steps']} steps, {rec['seeds']} seeds, {rec['items']} items per target: "
                      f"reliability {rec['reliability']:.2f} on the worst target ({rec['worst_target']}), which "
                      f"{verdict} the goal {goal}, at {cost} the full study's cost as configured.")
    if rec.get("note"):
        console.print(f"[yellow]note[/] {rec['note']}")
    console.print(f"pilot page: {result.page}")


@cli.command("analyze")
@click.argument("export", metavar="EXPORT", type=click.Path(exists=True, path_type=Path))
@click.option("--metric", type=click.Choice(METRICS), help="Default: the exported study's analysis.metric.")
@click.option("--n-traits", help="A number, or auto. Default: the exported study's.")
def analyze_export(export: Path, metric: str | None, n_traits: str | None) -> None:
    """Analyse an item-level export with no model and no store: diagnostics, uncertainty, traits.

    EXPORT is a report's data folder (`<report>-data/`, holding items.parquet and items.json)
    or its items.parquet. Every metric is recomputed from the items, so the analysis can be
    redone under another metric or trait count years later. In Python:
    `traitlens.load_items(EXPORT).traits()`.
    """
    from traitlens.api import load_items
    from traitlens.progress import working

    results = load_items(export)
    n_traits = int(n_traits) if n_traits is not None and n_traits.isdigit() else n_traits
    changes = {key: value for key, value in (("metric", metric), ("n_traits", n_traits)) if value is not None}
    results = results.with_settings(**changes)
    console.print(f"export of study {results.study}: {len(results.cells)} cells, {len(results.models)} models, "
                  f"{len(results.targets)} targets")
    with working(console, "analysis: traits"):
        result = results.traits()
    _print_traits(result, results.settings)


def _num(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.2f}"


def _print_frame(title: str, frame: pd.DataFrame) -> None:
    console.print(title)
    table = Table()
    for name in frame.index.names:
        table.add_column(str(name or ""))
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for index, row in frame.iterrows():
        labels = index if isinstance(index, tuple) else (index,)
        table.add_row(*map(str, labels), *(v if isinstance(v, str) else "-" if pd.isna(v) else f"{v:.3g}"
                                           for v in row))  # text as it is: a table already formatted
    console.print(table)


@cli.command()
@STUDY_ARG
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write. Default: report/<study>.html in the study's store.")
@click.option("--from-export", "export", type=click.Path(file_okay=False, path_type=Path),
              help="Rebuild from this item-level export folder (a report's -data folder) instead of the store.")
def report(study_file: Path, output: Path | None, export: Path | None) -> None:
    """Write the study's report: one self-contained HTML page, plus CSV/JSON tables beside it.

    Built from the store (no model is loaded), so it can be rebuilt anywhere the store is;
    computes the trait analysis and the explanation first if the store has none for these
    cells and settings (that reads the datasets and the base model's tokenizer). Opens
    offline: the plotting library is embedded. With --from-export, built from the study's
    item-level export instead (a committed study whose store is gone): everything is
    recomputed from its items; the adapters' training records appear only if the export has them.
    """
    console.print(f"report: {_load(study_file).report(output, export=export)}")


@cli.group()
def data() -> None:
    """Browse datasets: the offline catalog, local files, hub datasets."""


@data.command("list")
def data_list() -> None:
    """List the offline catalog: real datasets that need no hub access."""
    from traitlens.api import catalog

    table = Table(title="offline catalog (use as dataset: catalog:NAME)", title_justify="left")
    for column in ("name", "kind", "labels", "description"):
        table.add_column(column, no_wrap=column == "name")
    for name, entry in catalog().iterrows():
        table.add_row(name, entry["kind"], ", ".join(entry["labels"]) or "-", entry["description"])
    console.print(table)


@data.command("show")
@click.argument("dataset")
@click.option("--split", help="Split to show (default: the first one: train for most).")
@click.option("-n", "--examples", default=3, show_default=True, help="Rendered examples to print.")
def data_show(dataset: str, split: str | None, examples: int) -> None:
    """Size, splits, label distribution and rendered examples of DATASET.

    DATASET is catalog:NAME (or just NAME for a catalog entry), a local .jsonl/.json/.csv/.parquet
    file, or a hub id. Examples are rendered with the default template.
    """
    from traitlens.api import read_dataset
    from traitlens.data.template import render

    table, splits = read_dataset(dataset, split)
    split = split or (next(iter(splits)) if splits else "train")
    console.print(f"[bold]{dataset}[/] split [bold]{split}[/]: {len(table)} rows"
                  + (f"; splits: {', '.join(f'{k} ({v})' for k, v in splits.items())}" if splits else ""))
    name = dataset.removeprefix("catalog:")
    if name in CATALOG:
        console.print(f"from {CATALOG[name].source}")
    counts = table["answer"].value_counts()
    if len(counts) <= 20:
        console.print("labels: " + ", ".join(f"{label} {count} ({count / len(table):.1%})"
                                             for label, count in counts.items()))
    else:
        lengths = table["answer"].str.len()
        console.print(f"answers: {len(counts)} distinct, length {lengths.mean():.1f} characters "
                      f"on average (max {lengths.max()})")
    template = DatasetSpec(name="shown", dataset=dataset).template  # the default one
    for index, row in table.head(examples).iterrows():
        rendered = render(template, row)
        console.rule(f"example {index}")
        console.print(Text(rendered.prompt) + Text(rendered.answer, style="bold"))


def _load(study_file: Path):
    """The study named on the command line, with this command's console for progress."""
    from traitlens.api import load

    return load(study_file, console)


def _print_matrix(study) -> None:
    """Accuracy of every finished cell: models down, targets across."""
    cells = study.results().cells
    table = Table(title=f"study {study.name}: accuracy", title_justify="left")
    table.add_column("model")
    names = [target.name for target in study.config.targets]
    for name in names:
        table.add_column(name, justify="right")
    scores = {(row.model, row.target): row.metrics["accuracy"] for row in cells.itertuples()}
    for model in dict.fromkeys(study.plan().query("kind == 'eval'")["model"]):
        table.add_row(model, *(f"{scores[(model, name)]:.3f}" if (model, name) in scores else "-" for name in names))
    console.print(table)


def _print_plan(study) -> None:
    jobs = study.plan()
    table = Table(title=f"study {study.name}: plan", title_justify="left")
    for column in ("#", "job", "state", "key"):
        table.add_column(column, no_wrap=column != "job")
    for number, job in enumerate(jobs.itertuples(), 1):
        table.add_row(str(number), job.label, f"[{STATE_STYLE[job.state]}]{job.state}[/]", job.key[:12])
    console.print(table)
    done = int((jobs["state"] == "done").sum())
    store = study.config.store
    where = f"store {store}" if (store / "results.sqlite").exists() else f"no store yet at {store}"
    console.print(f"{len(jobs)} jobs ({int((jobs['kind'] == 'train').sum())} training, "
                  f"{int((jobs['kind'] == 'eval').sum())} evaluation): {done} done, {len(jobs) - done} to run; {where}.")


def _print_cost(cost) -> None:
    total = cost.total
    table = Table(title="compute, in forward tokens (a trained token counts 3: forward and backward)",
                  title_justify="left")
    for column in ("part", "jobs", "tokens", "share"):
        table.add_column(column, justify="left" if column == "part" else "right")
    parts = [(f"train {source}", rows) for source, rows in cost.training.groupby("source", sort=False)]
    parts += [(f"evaluate {target}", rows) for target, rows in cost.evaluation.groupby("target", sort=False)]
    for name, rows in parts:
        table.add_row(name, str(len(rows)), f"{int(rows['cost'].sum()):,}", f"{rows['cost'].sum() / total:.1%}")
    console.print(table)
    console.print(f"total: {total:,} forward tokens ({cost.training['cost'].sum() / total:.0%} training). "
                  "An upper bound: evaluation counts every choice and the full max_new_tokens.")


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings as one plain line, without the source line Python would print."""
    if issubclass(category, TraitlensWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def main() -> None:
    """Entry point: user mistakes print a clear message and exit 2, never a traceback."""
    warnings.showwarning = _show_warning
    try:
        cli.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("interrupted; finished jobs are kept in the store: rerun the same command to resume "
                   "(a job cut short is redone, training from its last checkpoint)", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TraitlensError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except sqlite3.DatabaseError as exc:
        click.echo(f"error: {_storage_message(exc)}", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO):
            raise
        click.echo(f"error: {_storage_message(exc)}", err=True)
        sys.exit(2)


def _storage_message(exc: Exception) -> str:
    """What a failed write or read of the store means, and what to do."""
    text = str(exc)
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "full" in text:
        return (f"no space left on the device ({text}). Free some space and rerun: finished jobs are kept, and the "
                "job that was cut short is redone.")
    if isinstance(exc, sqlite3.DatabaseError):
        return (f"the store's database cannot be used ({text}). Run `traitlens doctor STUDY.yaml` to check it; if it "
                "is damaged, move the store aside and rerun (or restore it from a backup).")
    return f"{exc.strerror or text}: {exc.filename or ''}. Check the store's folder and its permissions."
