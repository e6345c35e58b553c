"""Infrastructure every stage shares: atomic I/O, job logs, GPU claiming, isolated decoding workers, metrics."""
