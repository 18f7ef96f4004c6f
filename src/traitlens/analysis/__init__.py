"""Analysis of the transfer matrix on plain tables (pandas / numpy / scikit-learn, never torch):
matrix views, uncertainty, latent traits, side effects."""
