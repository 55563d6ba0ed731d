"""Small shared helpers: user-facing errors, atomic file output, progress display."""
