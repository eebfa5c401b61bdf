"""Loading samples into the internal schema (`rl.types.Sample`), with one entry point: `load_dataset`.

Two kinds of input, chosen by the file's extension:

- the released VideoAuto-R1 folder, as released: `data/data_config.yaml` maps each source name to
  `anno_path` (a JSON array; for TVBench a directory of JSON files, one per subset) and `data_path`
  (the media root; DAPO-Math, text only, has none). Relative paths resolve from the directory the
  job runs in (the release writes `data/...`), or from `data.media_root` when set: that plays the
  role of the folder holding `data/`, for annotation and media paths alike. Each of the eleven
  sources names its fields its own way; `SOURCES` holds one rule per source (docs/data.md lists them).
- `.jsonl` / `.parquet` in the internal schema (written by `write_jsonl` / `write_parquet`).

Per-item problems (a field missing, an answer that cannot be read, a problem type the recipe drops,
a missing/empty/corrupt media file, a clip window outside the video) skip the item, are warned about
and counted by source and reason in `Dataset.report`; a file that cannot be used at all (a missing
annotation file, unparseable JSON, an unknown source or key in the data_config) raises DataError
naming it. `Dataset.summary()` is the per-source table that loading logs.
The readers live beside this module: `rl.data.sources` (the released folder, one rule per source),
`rl.data.files` (JSONL / Parquet) and `rl.data.media` (media checks); this module picks one by the
file's extension and checks the media.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from rl.config import DataConfig
from rl.data.files import read_jsonl, read_parquet
from rl.data.media import MediaCheck, check_media
from rl.data.miniature_release import build_miniature_release
from rl.data.records import (
    DataError,
    Dataset,
    PathLike,
)
from rl.data.sources import load_release
from rl.data.synthetic import generate_synthetic

logger = logging.getLogger(__name__)



def load_dataset(spec: PathLike, media_root: Optional[PathLike] = None, *, check: MediaCheck = "probe") -> Dataset:
    """Samples from a release data_config.yaml or an internal .jsonl/.parquet, media checked.

    `media_root`: for a data_config, what its relative paths resolve against (default: the working
    directory); for .jsonl/.parquet, the base of relative media paths (default: the file's folder).
    Bad samples are skipped and counted in `.report`; an unusable file raises DataError.
    """
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        dataset = load_release(path, media_root)
    elif suffix == ".jsonl":
        dataset = read_jsonl(path, media_root)
    elif suffix == ".parquet":
        dataset = read_parquet(path, media_root)
    else:
        raise DataError(f"{path}: expected a data_config .yaml, a .jsonl or a .parquet file")
    dataset.samples = check_media(dataset.samples, dataset.report, check)
    logger.info("loaded %d samples from %s\n%s", len(dataset), path, dataset.summary())
    return dataset


def load_from_config(cfg: DataConfig, *, check: MediaCheck = "probe") -> Dataset:
    """The training samples `data.train` names: a data file, `synthetic` or `miniature_release` (built if needed)."""
    if cfg.train == "synthetic":
        generate_synthetic(cfg.synthetic_dir, cfg.synthetic_num_samples, cfg.seed,
                           kinds=tuple(cfg.synthetic_kinds), shuffle_options=cfg.synthetic_shuffle_options)
        return load_dataset(Path(cfg.synthetic_dir) / "samples.jsonl", check=check)
    if cfg.train == "miniature_release":
        root = build_miniature_release(cfg.miniature_release_dir, seed=cfg.seed)
        return load_dataset(root / "data" / "data_config.yaml", root, check=check)
    return load_dataset(cfg.train, cfg.media_root, check=check)
