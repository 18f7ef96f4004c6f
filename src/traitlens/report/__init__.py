"""The HTML report: one self-contained page built only from the store, plus CSV/JSON exports."""
