"""Data: sample records, the released sources, JSONL/Parquet files, media checks, video frames, synthetic tasks."""
