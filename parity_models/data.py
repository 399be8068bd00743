"""Datasets for training and evaluating base and parity models: find, verify and read
MNIST / Fashion-MNIST (gzipped IDX) and CIFAR-10 (python batches) into float tensors in [0, 1];
a user's image folder or .npz arrays (``folder:PATH``, ``npz:PATH``) are read by custom_data.py.

Data flow: files on disk -> ``load_dataset`` -> ``Dataset`` (train / val / test tensors) -> train.py, evaluate.py.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parity_models import custom_data
from parity_models.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]
VAL_SIZE = 5000
VAL_SEED = 0  # fixed, not the training seed: base and parity models must agree on the held-out images
NO_SHARED_ENV = "PARM_DATA_NO_SHARED"  # set (CI does) to ignore ../shared/datasets, as on a user's clone
DOWNLOAD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Spec:
    """Where a dataset comes from: file name -> md5, and the mirrors that serve those files."""

    files: dict[str, str]
    mirrors: tuple[str, ...]
    input_shape: tuple[int, ...]
    num_classes: int = 10


_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SPECS: dict[str, Spec] = {
    "mnist": Spec(dict(zip(_IDX, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                  "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
                  ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
                  (1, 28, 28)),
    "fashion-mnist": Spec(dict(zip(_IDX, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                          "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
                          ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
                          (1, 28, 28)),
    "cifar10": Spec({"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
                    ("https://www.cs.toronto.edu/~kriz/",), (3, 32, 32)),
}
CIFAR_DIR = "cifar-10-batches-py"

__all__ = ["Dataset", "DatasetError", "SPECS", "candidate_dirs", "check_fits", "dataset_for_model", "find_dataset_dir",
           "load_dataset"]


@dataclass
class Dataset:
    """All three splits as tensors: x float32 (N, *input_shape) in [0, 1], y int64 (N,)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    classes: list[str] | None = None  # class names (an image folder's subfolders), label i = classes[i]

    @property
    def input_shape(self) -> list[int]:
        return list(self.train_x.shape[1:])

    def normalization(self) -> dict[str, float]:
        """Pixel mean/std of the training split, stored in the model's Normalize layer."""
        return {"mean": float(self.train_x.mean()), "std": float(self.train_x.std())}


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Where to look for ``name``, in order: each root holds ``<name>/`` (never the files themselves, since
    MNIST and Fashion-MNIST share file names and one must not be read as the other)."""
    roots = [Path(r) / name for r in (data_dir, os.environ.get("PARM_DATA")) if r]
    roots += [Path("/usr/share/datasets") / name, Path("data") / name]
    if not os.environ.get(NO_SHARED_ENV):
        roots += [REPO_ROOT.parent / "shared" / "datasets" / name, Path.cwd().parent / "shared" / "datasets" / name]
    return list(dict.fromkeys(p.absolute() for p in roots))


def _has_files(folder: Path, name: str) -> bool:
    if name == "cifar10":
        return (folder / CIFAR_DIR / "data_batch_1").is_file() or (folder / "data_batch_1").is_file()
    return all((folder / f).is_file() or (folder / f[:-3]).is_file() for f in SPECS[name].files)


def find_dataset_dir(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The first folder holding the dataset's files; else download to ``data_dir`` or ``./data``."""
    if name not in SPECS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(SPECS))}, or your own images: "
                           f"folder:PATH (PATH/<class>/*.png) or npz:PATH (x_train, y_train, ...)")
    tried = candidate_dirs(name, data_dir)
    for folder in tried:
        if _has_files(folder, name):
            return folder
    target = Path(data_dir or "data") / name
    if download:
        try:
            return _download(name, target)
        except OSError as exc:  # no network, DNS failure, timeout, HTTP error
            reason = f"download failed ({exc})"
    else:
        reason = "download disabled"
    files = ", ".join(SPECS[name].files) + (f" (or its extracted {CIFAR_DIR}/)" if name == "cifar10" else "")
    raise DatasetError(
        f"dataset {name!r} not found and {reason}. Put the files {files} into one of: "
        + ", ".join(str(p) for p in tried) + " (or pass --data-dir / set $PARM_DATA)")


def _fetch(urls: list[str], dest: Path, md5: str) -> None:
    """Write the first mirror's copy whose md5 matches to ``dest``; OSError if none does."""
    error: OSError = OSError("no mirror")
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                payload = resp.read()
        except OSError as exc:  # URLError, timeouts and HTTP errors are all OSErrors
            error = exc
            continue
        if hashlib.md5(payload).hexdigest() == md5:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(payload)
            return
        error = OSError(f"{url}: md5 mismatch")
    raise error


def _download(name: str, target: Path) -> Path:
    """Fetch each file from the first mirror that answers with the right md5."""
    spec = SPECS[name]
    for fname, md5 in spec.files.items():
        dest = target / fname
        if not (dest.is_file() and hashlib.md5(dest.read_bytes()).hexdigest() == md5):
            _fetch([m + fname for m in spec.mirrors], dest, md5)
        if fname.endswith(".tar.gz"):
            with tarfile.open(dest) as tar:
                tar.extractall(target, filter="data")
    return target


def _read_idx(folder: Path, fname: str, magic: int) -> np.ndarray:
    """Read a (gzipped or plain) IDX file; header: magic, then one big-endian int32 per dimension."""
    path = folder / fname if (folder / fname).is_file() else folder / fname[:-3]
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    header = np.frombuffer(raw, ">i4", count=1 + ndim)
    if header[0] != magic:
        raise DatasetError(f"{path}: magic {header[0]}, expected {magic}")
    return np.frombuffer(raw, np.uint8, offset=4 * (1 + ndim)).reshape(header[1:])


def _read_idx_dataset(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (_read_idx(folder, _IDX[0], 2051)[:, None], _read_idx(folder, _IDX[1], 2049),
            _read_idx(folder, _IDX[2], 2051)[:, None], _read_idx(folder, _IDX[3], 2049))


def _read_cifar(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = folder / CIFAR_DIR if (folder / CIFAR_DIR).is_dir() else folder

    def batch(fname: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / fname, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # the official format is a pickle of numpy arrays
        return d[b"data"].reshape(-1, 3, 32, 32), np.asarray(d[b"labels"])

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True,
                 first: tuple[int, int] | None = None) -> Dataset:
    """Read all splits of a built-in dataset, or of ``folder:PATH`` / ``npz:PATH`` (a bare path of either
    kind too; a built-in name wins); val = the last VAL_SIZE images (a tenth of a small training set) of
    a VAL_SEED permutation of the training set. ``first=(n_train, n_test)``: only the first records of
    each file (a small real slice, for tests and quick runs)."""
    own = custom_data.parse_spec(name) if name not in SPECS else None
    if own is not None:
        arrays = custom_data.read(*own)
        return _split_val(custom_data.spec_name(*own), arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y,
                          arrays.num_classes, arrays.classes)
    folder = find_dataset_dir(name, data_dir, download)
    reader = _read_cifar if name == "cifar10" else _read_idx_dataset
    tr_x, tr_y, te_x, te_y = reader(folder)
    if first is not None:
        tr_x, tr_y, te_x, te_y = tr_x[:first[0]], tr_y[:first[0]], te_x[:first[1]], te_y[:first[1]]
    train_x, train_y = _to_tensors(tr_x, tr_y)
    test_x, test_y = _to_tensors(te_x, te_y)
    return _split_val(name, train_x, train_y, test_x, test_y, SPECS[name].num_classes)


def _split_val(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
               num_classes: int, classes: list[str] | None = None) -> Dataset:
    """Hold out the validation split: the same images for every model of this dataset (VAL_SEED)."""
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(VAL_SEED))
    val_size = min(VAL_SIZE, len(train_x) // 10)
    if val_size < 1:
        raise DatasetError(f"dataset {name!r} has {len(train_x)} training images; at least 10 are needed "
                           f"(a tenth is held out for validation)")
    fit, val = perm[:-val_size], perm[-val_size:]
    return Dataset(name, train_x[fit], train_y[fit], train_x[val], train_y[val], test_x, test_y, num_classes, classes)


def dataset_for_model(base_ckpt: dict[str, Any], dataset: str | None, data_dir: str | None) -> Dataset:
    """``dataset``, else the one the base checkpoint was trained on (an imported program may record none)."""
    name = dataset or base_ckpt.get("meta", {}).get("dataset")
    if not name:
        raise DatasetError("the base model records no dataset; pass --dataset (a built-in name, folder:PATH or "
                           "npz:PATH)")
    return load_dataset(name, data_dir)


def check_fits(base_ckpt: dict[str, Any], data: Dataset) -> None:
    """The dataset's images must be the base model's inputs, and its labels among the model's classes."""
    if list(data.input_shape) != list(base_ckpt["input_shape"]):
        raise DatasetError(f"dataset {data.name!r} has images {data.input_shape}; the base model takes "
                           f"{list(base_ckpt['input_shape'])}")
    if data.num_classes > base_ckpt["num_classes"]:
        raise DatasetError(f"dataset {data.name!r} has {data.num_classes} classes; the base model has "
                           f"{base_ckpt['num_classes']} outputs")
