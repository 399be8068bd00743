"""Dataset lookup and reading: the real IDX files beside the repo, and a clear error when absent."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from parity_models import data

def test_reads_a_slice_of_real_fashion_mnist() -> None:
    """The first records of the real files (the tests' slice) are read like the whole: val split, [0, 1]."""
    ds = data.load_dataset("fashion-mnist", download=False, first=(3000, 1000))
    assert ds.train_x.shape == (2700, 1, 28, 28) and ds.val_x.shape == (300, 1, 28, 28)
    assert ds.test_x.shape == (1000, 1, 28, 28) and ds.test_x.dtype.is_floating_point
    assert 0.0 <= float(ds.test_x.min()) and float(ds.test_x.max()) <= 1.0
    assert ds.test_y.bincount().tolist() == [107, 105, 111, 93, 115, 87, 97, 95, 95, 95]
    assert abs(ds.normalization()["mean"] - 0.2835) < 1e-3  # the full training set's is 0.2860


def test_shared_folder_is_ignored_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI sets PARM_DATA_NO_SHARED so that it sees what a user's clone sees: no ../shared/datasets."""
    monkeypatch.delenv(data.NO_SHARED_ENV, raising=False)
    assert any("shared" in p.parts for p in data.candidate_dirs("mnist"))
    monkeypatch.setenv(data.NO_SHARED_ENV, "1")
    assert not any("shared" in p.parts for p in data.candidate_dirs("mnist"))


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
