"""The report opened in headless Chromium: every section, no console errors, no injection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from rich.console import Console

from conftest import EVIL, EVIL_LABEL, MORE_SOURCES, TINY_TRAIN
from traitlens.config import load_study
from traitlens.data.load import prepare_study
from traitlens.errors import TraitlensError
from traitlens.execution.local import run_plan
from traitlens.execution.plan import plan_study
from traitlens.models.fake import FakeScorer
from traitlens.report.page import SECTIONS
from traitlens.store import Store

CHROMIUM = shutil.which("chromium")
def test_exports_beside_the_report(report):
    data = report.with_name("out-data")
    assert {p.name for p in data.iterdir()} >= {"matrix_raw.csv", "matrix_delta.csv", "cells_uncertainty.csv",
                                                 "cells_raw_intervals.csv", "trait_loadings.csv", "trait_scores.csv",
                                                 "traits.csv", "traits.json"}
    raw = data / "matrix_raw.csv"
    assert raw.read_text().splitlines()[0] == ",evil,amazon,arithmetic,movie"  # the study's order
    assert raw.read_text().splitlines()[1].startswith("base,")
    matrix = pd.read_csv(raw, index_col=0)
    intervals = pd.read_csv(data / "cells_raw_intervals.csv")
    assert len(intervals) == matrix.size  # every cell, the base's included, has its interval
    for row in intervals.itertuples():
        assert row.low <= row.score <= row.high
        assert row.score == pytest.approx(matrix.loc[row.model, row.target])
    assert (intervals["high"] > intervals["low"]).any()


def test_report_recomputes_analyses_whose_settings_changed(report):
    study = report.with_name("study.yaml")
    centred = report.with_name("centred.yaml")  # same study and store, other analysis settings
    centred.write_text(study.read_text().replace("analysis: {", "analysis: {standardize: false, "))
    for config, out, expected in ((centred, "centred.html", "targets centred, not standardised"),
                                  (study, "again.html", "targets standardised")):
        result = subprocess.run([sys.executable, "-m", "traitlens", "report", str(config), "-o",
                                 str(report.with_name(out))], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert expected in report.with_name(out).read_text()  # not the other config's stored traits


def test_a_report_rebuilt_from_the_export_alone(report, tmp_path):
    """The store gone (moved away), the committed export rebuilds the page: the same matrix, the
    reliability section, the adapters' training records from adapters.json."""
    study, data = report.with_name("study.yaml"), report.with_name("out-data")
    assert (data / "adapters.json").exists() and (data / "reliability.csv").exists()
    copy = tmp_path / "export"
    shutil.copytree(data, copy)
    out = tmp_path / "rebuilt.html"
    result = subprocess.run([sys.executable, "-m", "traitlens", "report", str(study), "--from-export", str(copy),
                             "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "How reliable is this matrix" in page and "One seed per source" in page
    assert "rebuilt from the export" in page and "training records are not in the export" not in page
    before = pd.read_csv(data / "matrix_raw.csv", index_col=0)
    after = pd.read_csv(tmp_path / "rebuilt-data" / "matrix_raw.csv", index_col=0)
    pd.testing.assert_frame_equal(before, after)
    (copy / "adapters.json").unlink()  # an older export: the page says what it lacks
    subprocess.run([sys.executable, "-m", "traitlens", "report", str(study), "--from-export", str(copy), "-o",
                    str(out)], capture_output=True, text=True, check=True)
    assert "training records are not in the export" in out.read_text()
    other = study.with_name("renamed.yaml")
    other.write_text(study.read_text().replace("name: tiny-train", "name: another", 1))
    wrong = subprocess.run([sys.executable, "-m", "traitlens", "report", str(other), "--from-export", str(copy),
                            "-o", str(out)], capture_output=True, text=True)
    assert wrong.returncode == 2 and "not of 'another'" in wrong.stderr + wrong.stdout


def test_page_is_self_contained_and_escaped(report):
    page = report.read_text()
    assert "<script src=" not in page and "http://" not in page.split("<script>", 1)[0]
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test.sh installs it)")
def test_report_in_headless_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    errors, dialogs, requests = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("request", lambda request: request.url.startswith("file:") or requests.append(request.url))
        page.goto(report.as_uri())
        page.wait_for_selector("div.figure .main-svg")
        for section, _ in SECTIONS:
            assert page.locator(f"section#{section} h2").count() == 1, section
        drawn = page.locator("div.figure .main-svg").count()
        assert drawn >= page.locator("div.figure").count() >= 6
        body = page.inner_text("body")
        assert EVIL in body and EVIL_LABEL in body  # shown as text
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == [] and dialogs == [] and requests == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_reuses_the_cells_it_is_given(report, tmp_path, monkeypatch):
    import traitlens
    from traitlens.recipes import analyses

    study = traitlens.load(report.with_name("study.yaml"))
    results = study.results()
    monkeypatch.setattr(analyses, "collect", lambda *args: pytest.fail("read the study's cells from the store again"))
    out = study.report(tmp_path / "given.html", results=results)
    assert "Transfer matrix" in out.read_text()


def test_a_study_too_small_for_traits_still_gets_its_report(tmp_path, tiny_model):
    path = tmp_path / "small.yaml"
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES).replace("evaluation: {limit: 8, dtype: float32}", "evaluation: {limit: 40, dtype: float32}\nanalysis: {bootstrap_samples: 30}")
                    .replace("  checkpoint_every: 2\n", "  checkpoint_every: 2\n  validation: {holdout: 4, every: 3}\n"))
    study = load_study(path)
    sources, targets = prepare_study(study)
    summary = run_plan(plan_study(study), Store(study.store), sources, targets, Console(quiet=True),
                       make_scorer=lambda s: FakeScorer(bias={None: "negative"}))
    assert not summary.failed
    traits = subprocess.run([sys.executable, "-m", "traitlens", "traits", str(path)], capture_output=True, text=True)
    assert traits.returncode == 0, traits.stderr
    assert "no traits: traits need at least three adapters scored on every target; 2 are" in traits.stdout
    assert "significant negative transfer" in traits.stdout or "side effects" in traits.stdout
    out = tmp_path / "small.html"
    result = subprocess.run([sys.executable, "-m", "traitlens", "report", str(path), "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "No traits for this study: traits need at least three adapters" in page
    assert 'id="figure-delta"' in page and 'id="figure-scree"' not in page
    # Training held out a slice: its loss before and after, per adapter and per source, and the curves.
    assert page.count("on 4 held-out examples (best at step") == 2 and 'id="figure-validation"' in page
    checks = page[page.index('id="checks"'):page.index('id="glance"')]
    assert "validation-loss drop" in checks and "interval counts" in checks
    assert "items only: training noise not measured" in checks
    data = tmp_path / "small-data"
    assert len(pd.read_csv(data / "cells_uncertainty.csv")) == 2 * 2  # 2 adapters x 2 targets
    assert json.loads((data / "traits.json").read_text())["traits"] == []


def test_item_level_export_round_trips_and_can_be_analysed_without_a_store(report, tmp_path):
    from traitlens.analysis.read_export import load_items
    from traitlens.recipes.analyses import collect

    data = report.with_name("out-data")
    items = pd.read_parquet(data / "items.parquet")
    assert list(items.columns) == ["model", "source", "seed", "target", "item", "gold", "prediction", "score",
                                   "choice_logprobs", "generated", "generated_tokens"]
    study = load_study(report.with_name("study.yaml"))
    from_store = collect(plan_study(study), Store(study.store))
    assert len(items) == sum(len(records) for by_model in from_store.outputs.values() for records in by_model.values())
    assert set(items["model"]) == {"base", "movie", "tweets", "evil"} and items["target"].nunique() == 4
    assert items.loc[items["target"] == "arithmetic", "generated"].notna().all()
    assert json.loads(items.loc[items["target"] == "amazon", "choice_logprobs"].iloc[0]).keys() == {"negative", "positive"}
    from_export = load_items(data)
    for metric in ("accuracy", "calibrated_margin", "macro_f1"):
        ours = from_export.scored(metric).cells.set_index(["model", "target"])["score"]
        theirs = from_store.scored(metric).cells.set_index(["model", "target"])["score"]
        assert ours.sort_index().to_numpy() == pytest.approx(theirs.sort_index().to_numpy()), metric
    assert from_export.kinds["arithmetic"] == "generative" and from_export.diagonal == from_store.diagonal
    assert from_export.settings == study.analysis and from_export.metric == study.analysis.metric
    # The exported features make the export explainable, to the same verdict and fits as the store's.
    stored = json.loads((data / "explanation.json").read_text())
    why = from_export.explain()
    assert why.verdict == stored["verdict"]
    assert why.groups["r2"].to_numpy() == pytest.approx([g["r2"] for g in stored["groups"]])
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "features.json").write_text('{"groups": 3}')
    with pytest.raises(TraitlensError, match="features.json: not the feature tables a report writes"):
        load_items(broken)
    result = subprocess.run([sys.executable, "-m", "traitlens", "analyze", str(data), "--metric", "balanced_accuracy"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "export of study" in result.stdout and "metric: balanced_accuracy" in result.stdout
    wrong = subprocess.run([sys.executable, "-m", "traitlens", "analyze", str(report.parent)], capture_output=True, text=True)
    assert wrong.returncode == 2 and "is not an item-level export" in wrong.stderr


def test_the_page_starts_with_the_metric_and_the_diagnostics(report):
    page = report.read_text()
    assert page.index('id="checks"') < page.index('id="glance"') < page.index('id="matrix"')
    checks = page[page.index('id="checks"'):page.index('id="glance"')]
    assert "calibrated_margin" in checks and "The base on each target" in checks
    assert "Each adapter on its own task" in checks  # movie and evil train on their own targets
    assert "arithmetic: accuracy" in checks  # the generated target falls back, and says so
    data = report.with_name("out-data")
    own = pd.read_csv(data / "diagnostics_own_task.csv")
    assert set(own["source"]) == {"movie", "evil"} and {"delta", "low", "high", "flags"} <= set(own.columns)


def test_compare_cells(report):
    study = report.with_name("study.yaml")
    run = lambda *args: subprocess.run([sys.executable, "-m", "traitlens", "compare-cells", str(study), *args],  # noqa: E731
                                       capture_output=True, text=True)
    result = run("base", "movie", "--target", "amazon", "--metric", "accuracy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("movie - base on amazon (accuracy, 40 items):") and "p=" in result.stdout
    missing = run("base", "nosuch", "--target", "amazon")
    assert missing.returncode == 2 and "'nosuch' is neither a source nor a model" in missing.stderr


def test_heatmap_stars_follow_the_matrix_cell_not_any_seed():
    from traitlens.report import figures

    raw = pd.DataFrame({"t": [0.5, 0.6]}, index=["base", "movie"])
    delta = raw.drop(index="base") - raw.loc["base"]
    seeds = pd.DataFrame([{"model": f"movie/s{s}", "source": "movie", "target": "t", "delta": d, "low": d - 0.05,
                           "high": d + 0.05, "q": q, "significant": q < 0.05}
                          for s, d, q in ((0, 0.2, 0.01), (1, 0.0, 0.9))])
    averaged = pd.DataFrame([{"model": "movie", "source": "movie", "target": "t", "delta": 0.1, "low": -0.05,
                              "high": 0.25, "q": 0.2, "significant": False}])
    figure = figures.delta_heatmap(delta, raw, averaged, seeds, 0.05)
    assert figure["data"][0]["text"] == [["+0.100"]]  # one seed's significance does not star the cell
    assert "movie/s0" in figure["data"][0]["hovertext"][0][0]  # but each seed is in the hover
    starred = figures.delta_heatmap(delta, raw, averaged.assign(q=0.01, significant=True), seeds, 0.05)
    assert starred["data"][0]["text"] == [["+0.100 *"]]


@pytest.mark.parametrize("damage, said", [
    (lambda d: (d / "items.json").write_text("{bad"), "items.json: cannot be read as JSON"),
    (lambda d: (d / "items.json").write_text("[1]"), "items.json: not an export's metadata"),
    (lambda d: (d / "items.parquet").write_bytes(b""), "items.parquet: cannot be read as Parquet"),
    (lambda d: (d / "items.parquet").write_bytes((d / "items.parquet").read_bytes()[:1000]),
     "items.parquet: cannot be read as Parquet"),
])
def test_a_damaged_export_is_named_not_a_traceback(tmp_path, damage, said):
    """A committed export (the quickstart pilot's), damaged as a bad copy or a half sync would."""
    from pathlib import Path

    import traitlens

    export = tmp_path / "export"
    shutil.copytree(Path(__file__).parents[1] / "studies/quickstart-pilot/shared/pilot-data/quickstart-pilot-24", export)
    traitlens.load_items(export)  # sound before the damage
    damage(export)
    with pytest.raises(TraitlensError, match=said):
        traitlens.load_items(export)
    result = subprocess.run([sys.executable, "-m", "traitlens", "analyze", str(export)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and said in result.stderr
