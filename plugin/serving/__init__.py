"""Serving adapters over HTTP: OpenAI's API (``app``) over a continuous-batching engine (``engine``) that routes each
row to its adapter on one shared base (``plugin.models.multi_adapter``)."""
