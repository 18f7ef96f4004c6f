"""Analysis of the transfer matrix on plain tables (pandas / numpy / scikit-learn; never torch, a
model, the store or the execution layer): results, matrix views, metrics, uncertainty, latent
traits, stability, side effects, the explanation, comparisons of two studies."""

# Bump when an analysis's output changes for the same cells and settings, so stored analyses
# computed by older code are recomputed instead of reused.
ANALYSIS_CODE_VERSION = 8  # 6: metrics beyond accuracy, diagnostics, family folds, split-half trait count;
# 7: promax refuses a trait with no loadings (it gave NaN), the explanation stored without the features
# 8: seed-level intervals, variance components, seed-split trait count, stability nulls, unique trait names
