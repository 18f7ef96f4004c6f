"""`traitlens.Traits`: the trait estimator on a notebook user's own table, in scikit-learn's conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import traitlens


def planted_matrix(seed: int = 0) -> pd.DataFrame:
    """12 sources x 6 targets: sentiment targets move with one latent score, arithmetic with another."""
    rng = np.random.default_rng(seed)
    sentiment, arithmetic = rng.normal(size=12), rng.normal(size=12)
    columns = {f"sent{i}": sentiment + 0.2 * rng.normal(size=12) for i in range(3)}
    columns |= {f"arith{i}": arithmetic + 0.2 * rng.normal(size=12) for i in range(3)}
    return pd.DataFrame(columns, index=[f"s{i}" for i in range(12)])


def test_traits_fit_a_plain_dataframe_and_name_traits_from_abilities():
    matrix = planted_matrix()
    abilities = {t: ["sentiment" if t.startswith("sent") else "arithmetic"] for t in matrix.columns}
    traits = traitlens.Traits(rotation="varimax").fit(matrix, abilities=abilities)
    assert traits.n_traits_ == 2  # parallel analysis finds the two planted traits
    assert sorted(name.split(" (")[0] for name in traits.names_) == ["arithmetic", "sentiment"]
    first = traits.loadings_.iloc[:, 0].abs()
    assert {first.idxmax()[:4], first.nsmallest(3).index[0][:4]} == {"sent", "arit"}  # simple structure
    assert traits.scores_.shape == (12, 2) and traits.explained_variance_ratio_.sum() > 0.8


def test_traits_follow_scikit_learn_conventions_and_refuse_bad_input():
    estimator = traitlens.Traits(n_traits=1, method="factor_analysis", rotation="none")
    assert estimator.get_params()["method"] == "factor_analysis"
    copy = clone(estimator).set_params(n_traits=2)
    assert copy.fit(planted_matrix()).loadings_.shape == (6, 2) and estimator.n_traits == 1
    assert not hasattr(estimator, "loadings_")  # nothing learned before fit
    with pytest.raises(traitlens.TraitlensError, match="column\\(s\\) label hold values that are not numbers"):
        traitlens.Traits().fit(planted_matrix().assign(label="x"))
    with pytest.raises(traitlens.TraitlensError, match="method must be one of pca, factor_analysis"):
        traitlens.Traits(method="ica").fit(planted_matrix())
    with pytest.raises(traitlens.TraitlensError, match="traits need at least 3 sources"):
        traitlens.Traits().fit(planted_matrix().iloc[:2])
