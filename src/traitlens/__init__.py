"""traitlens: which training datasets help or hurt which capabilities, and why."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("traitlens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
