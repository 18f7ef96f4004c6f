"""Forecasting a study's transfer matrix from cheap probes (#23, in progress). So far: `cost`,
what a full study costs in tokens through the model, which a forecast's budget is a share of."""
