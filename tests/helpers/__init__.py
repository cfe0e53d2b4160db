"""Helpers of the test suite, one module per concern (servers, events, the Kafka and process stacks, the cache)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root: where schema.graphql, openapi/ and contracts/ are."""
