"""The Python API: documented, layered, and the same results the CLI and the report show."""

from __future__ import annotations

import ast
import inspect
import pydoc
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import traitlens

SRC = Path(traitlens.__file__).parent
MODEL_CODE = ("torch", "transformers", "peft", "traitlens.models", "traitlens.train")
LAYERS = {  # package -> what it must never import, directly or inside a function
    "analysis": (*MODEL_CODE, "traitlens.execution", "traitlens.store"),
    "report": (*MODEL_CODE, "traitlens.execution", "traitlens.store"),
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports anywhere in it (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_import_layering(package):
    forbidden = LAYERS[package]
    found = {f"{path.name}: {name}" for path in (SRC / package).glob("*.py") for name in _imports(path)
             if name.startswith(forbidden)}
    assert not found, f"traitlens.{package} imports {sorted(found)}"
    # And nothing it imports pulls them in: every module of the package, imported for real.
    modules = [f"traitlens.{package}.{path.stem}" for path in (SRC / package).glob("*.py") if path.stem != "__init__"]
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            f"bad = sorted(m for m in sys.modules if m.startswith({forbidden!r})); print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"importing traitlens.{package} loaded {result.stdout}{result.stderr}"


def _public_callables():
    for name in traitlens.__all__:
        value = getattr(traitlens, name)
        if inspect.isfunction(value):
            yield name, value
        elif inspect.isclass(value) and not issubclass(value, Exception):
            yield name, value
            for attr, member in vars(value).items():
                if attr.startswith("_"):
                    continue
                function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if inspect.isfunction(function):
                    yield f"{name}.{attr}", function


def test_every_public_function_has_a_docstring_with_an_example():
    missing = [name for name, value in _public_callables() if ">>>" not in (inspect.getdoc(value) or "")]
    assert not missing, f"no docstring with an example: {missing}"


def test_help_lists_the_api():
    text = pydoc.render_doc(traitlens, renderer=pydoc.plaintext)
    for name in ("load(path", "load_items(path", "class Study", "class Results", "matrix(", "traits(", "explain(",
                 "recommend(", "report("):
        assert name in text, name


def test_import_is_light():
    """`import traitlens`, and the API every command loads, pay for no model or analysis library."""
    for module in ("traitlens", "traitlens.api"):
        code = (f"import sys, {module}; "
                "sys.exit(any(m.startswith(('torch', 'scipy', 'sklearn')) for m in sys.modules))")
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0, module


def test_results_of_a_stored_study(report, tmp_path):
    study = traitlens.load(report.with_name("study.yaml"))
    jobs = study.plan()
    assert set(jobs["state"]) == {"done"} and len(jobs) == 3 + 4 * 4
    assert study.status().loc["eval", "done"] == 16
    res = study.results()
    assert res.metric == study.config.analysis.metric and res.features is not None
    raw = res.matrix("raw", metric="accuracy")
    assert list(raw.index) == ["base", "movie", "tweets", "evil"] and raw.shape[1] == 4
    delta = res.matrix("delta", metric="accuracy")
    assert delta.loc["movie"].to_numpy() == pytest.approx((raw.loc["movie"] - raw.loc["base"]).to_numpy())
    items = res.items
    assert len(items) == sum(len(r) for by_model in res.outputs.values() for r in by_model.values())
    assert res.cells["seed"].dtype == items["seed"].dtype == "Int64"  # one dtype for one column
    scored = items.dropna(subset=["value"]).groupby(["model", "target"])["value"].mean()
    cells = res.cells.set_index(["model", "target"])["score"]
    assert scored.to_numpy() == pytest.approx(cells.loc[scored.index].to_numpy())  # items average to cells
    traits = res.traits(n_traits=1)
    varying = list(res.matrix("delta").columns[res.matrix("delta").std() > 0])  # a constant target has no loading
    assert list(traits.loadings_.index) == varying and len(varying) >= 3 and traits.scores_.shape == (3, 1)
    assert traits.explained_variance_ratio_.iloc[0] > 0
    assert "median_congruence" in traits.stability_
    with pytest.raises(traitlens.TraitlensError, match="rotation"):
        res.traits(rotation="sideways")
    why = res.explain(traits)
    assert list(why.groups["group"]) and set(why.groups.columns) >= {"group", "r2", "null_95", "p"}
    assert why.verdict and not why.correlations.empty and not why.recommendations.empty
    assert res.compare("base", "movie", target="amazon").items == 40
    again = traitlens.load_items(res.export(tmp_path / "export").parent)
    assert again.matrix("raw").to_numpy() == pytest.approx(res.matrix("raw").to_numpy())


def test_report_rebuilt_with_new_settings_loads_no_model_and_reads_no_dataset(report, tmp_path, monkeypatch):
    folder = shutil.copytree(report.parent, tmp_path / "copy")  # the study, its data and its store
    changed = folder / "promax.yaml"
    changed.write_text((folder / "study.yaml").read_text().replace(
        "analysis: {", "analysis: {rotation: promax, n_traits: 2, standardize: false, "))

    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded a model or read a dataset")

    import transformers

    from traitlens.data import load as data_load
    from traitlens.models import embed, hf
    from traitlens.models import load as model_load

    for owner, name in ((model_load, "load_base"), (hf.HFScorer, "__init__"), (embed, "centroids"),
                        (embed, "_encoder"), (transformers.AutoModelForCausalLM, "from_pretrained"),
                        (transformers.AutoTokenizer, "from_pretrained"), (data_load, "prepare_study")):
        monkeypatch.setattr(owner, name, refuse)
    study = traitlens.load(changed)
    before = study.stored("explain")
    page = study.report(folder / "promax.html").read_text()
    assert "2 trait(s) from" in page and "with promax rotation" in page
    assert "targets centred, not standardised" in page
    assert "eigenvalue of the target covariance matrix" in page  # the scree plot shows what was fitted
    after = study.stored("explain")
    assert after != before and after["verdict"] in page  # the explanation was redone, from stored features


def test_notebook_runs_on_a_stored_study(report, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parent.parent / "examples" / "explore.ipynb", as_version=4)
    monkeypatch.setenv("TRAITLENS_STUDY", str(report.with_name("study.yaml")))  # the kernel inherits it
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "flipped the most items on" in text and "metric: calibrated_margin" in text


def test_compare_command_matches_a_study_with_itself(report):
    path = str(report.with_name("study.yaml"))
    result = subprocess.run([sys.executable, "-m", "traitlens", "compare", path, path, "--samples", "20"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 shared sources x 4 shared targets" in result.stdout
    assert "congruence 1.00" in result.stdout and "0 of 12 shared cells disagree" in result.stdout


def test_a_report_after_the_analyses_shows_the_features_they_computed(report, tmp_path):
    """The end of a run: features computed in `analyze()` must reach the report built from the
    results it returns (they once arrived without them, and the page said "not computed")."""
    import sqlite3

    folder = shutil.copytree(report.parent, tmp_path / "copy")
    study = traitlens.load(folder / "study.yaml")
    with sqlite3.connect(study.config.store / "results.sqlite") as db:
        db.execute("DELETE FROM analyses")  # as after the jobs of a first run
    results = study.analyze()
    assert results.features is not None
    page = study.report(folder / "again.html", results=results).read_text()
    assert "Hidden statistics of every dataset" in page and "Not computed for this store yet" not in page
    assert (folder / "again-data" / "source_profiles.csv").exists()
