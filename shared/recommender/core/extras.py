"""Optional packages, left out of the light install (`make demo`): each is installed by an extra of pyproject.toml,
and a command that needs a missing one stops with one line naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from recommender.core.errors import MissingExtra

# The extra of pyproject.toml that installs each optional top-level package (`make devel` installs them all).
EXTRA = {"pyarrow": "parquet", "boto3": "s3", "pyspark": "spark"}


def optional(module: str, purpose: str) -> ModuleType:
    """`module` imported; MissingExtra saying that `purpose` needs it, and how to install it, when it is absent."""
    top = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # Only the package's own absence is ours to explain; a broken install of something it imports is not.
        if err.name is not None and err.name.partition(".")[0] != top:
            raise
        raise MissingExtra(
            f"{purpose} needs {top}: make devel installs it (or pip install -e '.[{EXTRA[top]}]')"
        ) from None
