"""Stage 2: padding and masks, the experiment matrix, training and evaluation runs, the reference models."""
