"""Forecasting a study's transfer matrix from cheap probes (#23; docs/forecast.md).

- `cost`: what a full study costs in tokens through the model; a forecast's budget is a share of it.
- `short`: the short-training probe (one seed, fewer steps and items, a learning curve).
- `gradient`: the gradient-affinity probe (LoRA gradient cosines on a fresh adapter).
- `profiles`: forecasts fitted on measured cells, from features and probe matrices.
- `combine`: the stored probes in delta units, by a ridge learned on finished studies' cells.
- `calibrate`: split-conformal intervals from the errors of earlier forecasts.
- `quality`: a forecast scored against a measured matrix (Spearman, top-1 regret, trait
  congruence, interval coverage).
"""
