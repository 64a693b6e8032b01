"""Layering: the core imports no presentation library, and the CLI starts light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["aiofetch.engine", "aiofetch.transfer", "aiofetch.planner"])
def test_core_loads_neither_rich_nor_click(module: str) -> None:
    """Importing the engine layer pulls in neither rich nor click."""
    loaded = modules_after(f"import {module}")
    assert "rich" not in loaded and "click" not in loaded


def test_cli_module_does_not_load_aiohttp_or_rich() -> None:
    """`aiofetch --help` and `--version` need neither aiohttp nor rich."""
    loaded = modules_after("import aiofetch.cli")
    assert "aiohttp" not in loaded and "rich" not in loaded


def test_public_api() -> None:
    """The package exports the API it documents, sorted."""
    import aiofetch

    assert aiofetch.__all__ == sorted(aiofetch.__all__)
    for name in aiofetch.__all__:
        assert getattr(aiofetch, name) is not None


def test_a_run_off_a_terminal_does_not_load_rich_console(tmp_path: Path) -> None:
    """Under cron or in a pipeline (stderr not a terminal) the bars are never drawn, so
    rich's console and progress modules are never imported."""
    dest = tmp_path / "out"
    loaded = modules_after(
        "import contextlib\nfrom aiofetch.cli import command\n"
        # main() itself ends with os._exit, before anything could print the modules
        f"args = ['-i', '/dev/null', '-d', {str(dest)!r}]\n"
        "with contextlib.suppress(SystemExit):\n"
        "    command.main(args, prog_name='aiofetch', standalone_mode=False)")
    assert "aiohttp" in loaded  # it did run
    assert "rich.console" not in loaded and "rich.progress" not in loaded


def test_the_driver_of_a_cluster_run_does_not_load_aiohttp() -> None:
    """A --dask run's driver fetches nothing itself: what it imports to plan, submit and
    settle (the engine, the cluster side, the task it sends, the loop) leaves aiohttp
    out (10 MB of its peak RSS)."""
    loaded = modules_after("import aiofetch.engine, aiofetch.cluster, aiofetch.task, "
                           "aiofetch.loop, aiofetch.runs")
    assert "aiofetch.cluster" in loaded
    assert "aiohttp" not in loaded
