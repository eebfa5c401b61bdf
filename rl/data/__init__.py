"""Data: sample records, source loaders, video frame planning and decoding, synthetic tasks."""
