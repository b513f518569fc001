"""Helpers the tests share (no fixtures, no tests): ROOT, tiny models and checkpoints, served apps,
the browser, the embedded Milvus server, the Markdown command reader. Fixtures live in conftest.py
files; a test module never imports another test module."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
