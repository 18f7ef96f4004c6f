"""The study config: schema (`schema.py`) and file loading with user-facing errors (`load.py`)."""

from traitlens.config.load import load_study
from traitlens.config.schema import Source, Study, Target

__all__ = ["Source", "Study", "Target", "load_study"]
