"""The installed package's version (recorded with every result), at the bottom of the layers so
that any module may read it without importing the package's public surface."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("traitlens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
