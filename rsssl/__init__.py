"""rsssl: self-supervised learning for remote-sensing imagery."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rsssl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
