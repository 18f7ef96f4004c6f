"""Forecasting a study's transfer matrix from cheap probes (#23, in progress).

- `cost`: what a full study costs in tokens through the model; a forecast's budget is a share of it.
- `quality`: a forecast scored against a measured matrix (Spearman, top-1 regret, trait
  congruence, interval coverage).
- `profiles`: the no-training forecast from the datasets' features, with split-conformal intervals.
"""
