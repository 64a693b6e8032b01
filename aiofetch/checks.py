"""What a finished body must hash to: the input's sha256 (or --checksums'), and the
digests the server vouches for (RFC 9530 Repr-Digest, Content-Digest)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import Config
from .headers import DIGEST_NAMES, parse_digest_fields
from .models import Planned
from .partfile import PartFile


def expected_sha256(config: Config, planned: Planned, path: str) -> str | None:
    """The digest the body must have: from the input line, else from --checksums."""
    if planned.job.sha256:
        return planned.job.sha256
    return config.checksums.get(path) or config.checksums.get(path.rsplit("/", 1)[-1])


@dataclass(frozen=True, slots=True)
class Check:
    """One digest the finished file must have, and where that expectation came from."""

    algorithm: str  # hashlib name
    digest: bytes
    source: str

    def failure(self, part: PartFile) -> str:
        if self.source == "sha256":
            return (f"sha256 mismatch: expected {self.digest.hex()[:16]}..., "
                    f"got {part.sha256()[:16]}...")
        return f"{self.source} does not match the body"


def pairs(checks: list[Check]) -> list[tuple[str, bytes]]:
    """(hashlib name, digest) pairs, as PartFile checks them."""
    return [(check.algorithm, check.digest) for check in checks]


def body_checks(config: Config, planned: Planned, path: str, status: int,
                headers: Mapping[str, str]) -> list[Check]:
    """What the file must hash to. Repr-Digest covers the whole representation, also in
    a 206; Content-Digest only this message's content, which is the whole file in a 200
    alone."""
    checks = []
    wanted = expected_sha256(config, planned, path)
    if wanted is not None:
        checks.append(Check("sha256", bytes.fromhex(wanted), "sha256"))
    found = parse_digest_fields(headers.get("Repr-Digest"))
    if status == 200:
        for name, value in parse_digest_fields(headers.get("Content-Digest")).items():
            found.setdefault(name, value)
    checks.extend(Check(name, value, f"{DIGEST_NAMES[name]} from the server's digest header")
                  for name, value in found.items())
    return checks
