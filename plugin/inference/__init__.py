"""Using a trained adapter: load a run or adapter folder, chat and generate with it, export it."""
