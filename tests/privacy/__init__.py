"""Privacy: scrubbing of every stored string, and the scan of every table for planted personal data."""
