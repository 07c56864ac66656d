"""One fine-tuning run: TRL / transformers trainers with the auxiliary losses, its output folder, telemetry."""
