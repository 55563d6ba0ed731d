"""Reading and writing video files and frame sequences (PyAV: FFmpeg's decoders, libx264, GIF)."""
