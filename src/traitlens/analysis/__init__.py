"""Analysis of the transfer matrix on plain tables (pandas / numpy / scikit-learn, never torch):
matrix views, uncertainty, latent traits, side effects."""

# Bump when an analysis's output changes for the same cells and settings, so stored analyses
# computed by older code are recomputed instead of reused.
ANALYSIS_CODE_VERSION = 6  # 6: metrics beyond accuracy, diagnostics, family folds, split-half trait count
