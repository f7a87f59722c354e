"""surgeon: diagnose why a fine-tuned LLM lost its alignment, and repair it surgically."""

from __future__ import annotations

__version__ = "0.1.0"
