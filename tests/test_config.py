"""Run options and size parsing (aiofetch.config)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aiofetch.config import DEFAULT_USER_AGENT, Config, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("10", 10),
        ("500K", 500 * 1024),
        ("500k", 500 * 1024),
        ("1.5M", 1024 * 1024 * 3 // 2),
        ("2GiB", 2 * 1024**3),
        ("3g", 3 * 1024**3),
        ("1T", 1024**4),
        ("10KB", 10 * 1024),
        ("10kib", 10 * 1024),
        ("7b", 7),
        ("0.5K", 512),
        (" 10M ", 10 * 1024**2),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    """Sizes take binary K/M/G/T suffixes, optional `B`/`iB`, any case."""
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["10X", "", "  ", "-1", "K", "1.5.5M", "1e3", "M10", "10 MBs", "ten", "inf", "nan"],
)
def test_parse_size_rejects(text: str) -> None:
    """Anything but a non-negative number with an optional unit raises ValueError."""
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_config_defaults() -> None:
    """Defaults follow the contract."""
    config = Config()
    assert config.dest == Path(".")
    assert config.layout == "flat"
    assert config.if_exists == "skip"
    assert config.content_disposition is False
    assert config.jobs == 16
    assert config.per_host == 6
    assert config.max_redirects == 20
    assert config.connect_timeout == 10.0
    assert config.read_timeout == 60.0
    assert config.user_agent == DEFAULT_USER_AGENT
    assert DEFAULT_USER_AGENT.startswith("aiofetch/")


@pytest.mark.parametrize("jobs", [0, -1])
def test_config_rejects_too_few_jobs(jobs: int) -> None:
    """jobs < 1 raises ValueError."""
    with pytest.raises(ValueError, match="jobs"):
        Config(jobs=jobs)


def test_config_rejects_negative_per_host() -> None:
    """per_host below 0 raises; 0 means unlimited."""
    with pytest.raises(ValueError, match="per_host"):
        Config(per_host=-1)
    assert Config(per_host=0).per_host == 0


def test_config_is_frozen_and_replace_validates() -> None:
    """Config cannot be mutated; dataclasses.replace re-validates."""
    config = Config(jobs=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.jobs = 3  # type: ignore[misc]
    assert dataclasses.replace(config, jobs=4).jobs == 4
    with pytest.raises(ValueError, match="jobs"):
        dataclasses.replace(config, jobs=0)
