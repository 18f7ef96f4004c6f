"""Analysis of the transfer matrix on plain tables (pandas / numpy / scikit-learn, never torch):
matrix views, uncertainty, latent traits, side effects."""

# Bump when an analysis's output changes for the same cells and settings, so stored analyses
# computed by older code are recomputed instead of reused.
ANALYSIS_CODE_VERSION = 5  # 5: text statistics and similarities from at most 1,000 rows per dataset
