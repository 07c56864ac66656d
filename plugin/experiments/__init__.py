"""Many runs at once: the method study and the speed / memory benchmark against PEFT LoRA."""
