"""Write a miniature VideoAuto-R1 release (the real layout, every source, good and bad items).

    .venv/bin/python tests/make_release.py OUT [--seed N]

Then `thinkonce train ... data.train=OUT/data/data_config.yaml data.media_root=OUT`, or run from
OUT so the release's relative `data/...` paths resolve as they do for the real one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.data.loaders import load_dataset  # noqa: E402
from rl.data.miniature_release import build_miniature_release  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (holds data/data_config.yaml afterwards)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = build_miniature_release(args.out, seed=args.seed)
    dataset = load_dataset(root / "data" / "data_config.yaml", root)
    print(f"{root / 'data' / 'data_config.yaml'}: {len(dataset)} samples\n{dataset.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
