"""Running a study: its jobs (`plan.py`), run locally (`local.py`) or on Ray (`distributed.py`);
its results read from the store and its analyses stored back (`analyses.py`); the datasets'
features, which need the base model (`features.py`)."""
