"""Small utilities without a config: atomic file writes and weight-file I/O."""
