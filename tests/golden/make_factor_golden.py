"""Writes factor_analysis.json: loadings from factor_analyzer, an implementation independent of
traitlens's (its own ML fit and rotations), for tests/test_traits.py to compare against.

Run in an environment that has factor-analyzer (not a traitlens dependency):
    pip install factor-analyzer==0.5.1 "scikit-learn<1.6" && python tests/golden/make_factor_golden.py
"""

import json
from pathlib import Path

import numpy as np
from factor_analyzer import FactorAnalyzer

rng = np.random.default_rng(7)
true_loadings = np.array([[0.8, 0.0], [0.7, 0.1], [0.75, -0.1], [0.6, 0.2],
                          [0.0, 0.8], [0.1, 0.7], [-0.1, 0.75], [0.2, 0.6]])
scores = rng.standard_normal((60, 2))
data = scores @ true_loadings.T + rng.standard_normal((60, 8)) * 0.5
golden = {"data": data.tolist(), "factor_analyzer": "0.5.1", "scikit-learn": "1.5.2"}
for rotation in ("varimax", "promax"):
    model = FactorAnalyzer(n_factors=2, rotation=rotation, method="ml", is_corr_matrix=False)
    model.fit(data)
    golden[rotation] = model.loadings_.tolist()
Path(__file__).with_name("factor_analysis.json").write_text(json.dumps(golden, indent=1))
