"""Dataset lookup and reading: the real IDX files beside the repo, and a clear error when absent."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from parity_models import data

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets not beside the repo")
def test_lookup_finds_shared_copy_and_reads_real_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARM_DATA", raising=False)
    folder = data.find_dataset_dir("mnist", download=False)
    assert (folder / "t10k-images-idx3-ubyte.gz").is_file()
    ds = data.load_dataset("mnist", download=False)
    assert ds.train_x.shape == (55000, 1, 28, 28) and ds.val_x.shape == (5000, 1, 28, 28)
    assert ds.test_x.shape == (10000, 1, 28, 28) and ds.test_x.dtype.is_floating_point
    assert 0.0 <= float(ds.test_x.min()) and float(ds.test_x.max()) <= 1.0
    assert ds.test_y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(ds.normalization()["mean"] - 0.1307) < 2e-3


def test_missing_dataset_names_files_and_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(data, "candidate_dirs", lambda name, data_dir=None: [tmp_path / name])
    with pytest.raises(data.DatasetError) as err:
        data.find_dataset_dir("fashion-mnist", download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "fashion-mnist") in msg and "--data-dir" in msg


def test_unknown_dataset() -> None:
    with pytest.raises(data.DatasetError, match="known: cifar10, fashion-mnist, mnist"):
        data.find_dataset_dir("imagenet")


def test_read_idx_plain_and_gzipped(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = np.array([2051, 2, 3, 4], ">i4").tobytes() + images.tobytes()
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "b-idx3-ubyte").write_bytes(raw)
    assert (data._read_idx(tmp_path, "a-idx3-ubyte.gz", 2051) == images).all()
    assert (data._read_idx(tmp_path, "b-idx3-ubyte.gz", 2051) == images).all()  # falls back to the unzipped name
    with pytest.raises(data.DatasetError, match="magic"):
        data._read_idx(tmp_path, "a-idx3-ubyte.gz", 2049)
