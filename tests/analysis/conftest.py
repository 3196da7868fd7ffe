"""Shared fixtures of the analysis tests: one torch thread (the tests are tiny; on a shared
2-core machine extra threads only add contention)."""

from __future__ import annotations
