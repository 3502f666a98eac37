"""archspec's version, in a module of its own so that any module can read it without
importing the package's public API (which imports them lazily: a circle). Keep it equal
to pyproject.toml's ``version``."""

__version__ = "0.1.0"
