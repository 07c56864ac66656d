"""Base models and tokenizers (4-bit / 8-bit included), which layers an adapter can target, saved adapters loaded
strictly."""
