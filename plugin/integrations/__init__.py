"""Integrations with other fine-tuning frameworks (import each only where its framework is installed)."""
