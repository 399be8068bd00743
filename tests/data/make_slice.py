"""Rebuild the committed Fashion-MNIST slice in tests/data/fashion-mnist/ from a full copy of the
dataset: the first TRAIN images of the training file and the first TEST of the test file, in the
same gzipped IDX format, so the suite needs no data beside the clone. Run: python tests/data/make_slice.py [SRC]"""
from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

TRAIN, TEST = 3000, 1000
OUT = Path(__file__).resolve().parent / "fashion-mnist"
FILES = {"train-images-idx3-ubyte.gz": TRAIN, "train-labels-idx1-ubyte.gz": TRAIN,
         "t10k-images-idx3-ubyte.gz": TEST, "t10k-labels-idx1-ubyte.gz": TEST}


def cut(raw: bytes, n: int) -> bytes:
    """The IDX header with its first dimension set to n, then the first n records."""
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4).copy()
    record = int(np.prod(dims[1:])) if ndim > 1 else 1
    dims[0] = n
    return raw[:4] + dims.astype(">i4").tobytes() + raw[4 + 4 * ndim: 4 + 4 * ndim + n * record]


def main(src: Path) -> None:
    OUT.mkdir(exist_ok=True)
    for name, n in FILES.items():
        data = cut(gzip.decompress((src / name).read_bytes()), n)
        (OUT / name).write_bytes(gzip.compress(data, mtime=0))  # mtime 0: the same bytes on every rebuild
        print(f"{name}: {n} records, sha256 {hashlib.sha256(data).hexdigest()} (uncompressed)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared/datasets/fashion-mnist")
