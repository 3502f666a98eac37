"""The canonical form of a spec: fully resolved, every default explicit, and its hash.

``loads(canonical(spec)) == spec`` holds for every valid spec, so the canonical text is
what checkpoints store and what the content hash (sha256) is taken of.
"""

from __future__ import annotations

import hashlib

import yaml

from .schema import DenseNetSpec

__all__ = ["canonical_dict", "canonical", "content_hash"]


def canonical_dict(spec: DenseNetSpec) -> dict:
    """Plain data for ``spec`` with every field present, in schema order."""
    return spec.model_dump(mode="json")


def canonical(spec: DenseNetSpec) -> str:
    """YAML text of the canonical form (keys in schema order, nulls written out)."""
    return yaml.safe_dump(canonical_dict(spec), sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=100)


def content_hash(spec: DenseNetSpec) -> str:
    """sha256 hex digest of the canonical form: equal specs, equal hashes."""
    return hashlib.sha256(canonical(spec).encode("utf-8")).hexdigest()
