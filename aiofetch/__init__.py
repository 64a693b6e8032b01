"""aiofetch: a fast, safe, scriptable bulk URL downloader."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BadLine",
    "Config",
    "Job",
    "Result",
    "Status",
    "__version__",
    "download",
    "download_all",
]

if TYPE_CHECKING:
    from .config import Config
    from .engine import download, download_all
    from .models import BadLine, Job, Result, Status

# Imported on first use, so `aiofetch --version` does not pay for aiohttp.
_LAZY = {
    "Config": "config",
    "download": "engine",
    "download_all": "engine",
    "BadLine": "models",
    "Job": "models",
    "Result": "models",
    "Status": "models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiofetch' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
