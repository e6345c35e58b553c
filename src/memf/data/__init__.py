"""The raw dataset: its contract, validation into results/data, media decoding, folds."""
