"""Base models and tokenizers (4-bit / 8-bit included), the PEFT config a YAML describes, saved adapters."""
