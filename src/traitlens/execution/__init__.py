"""Turning a study into jobs (`plan.py`) and, later, running them locally or on Ray."""
