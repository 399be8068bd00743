"""A user's own images as a dataset: a folder of class subfolders (``root/<class>/*.png``, or ``root/train/<class>``
and ``root/test/<class>``) or arrays in an .npz file (x_train, y_train[, x_test, y_test], or x, y).

Data flow: ``folder:PATH`` / ``npz:PATH`` -> data.load_dataset -> **read** (float tensors in [0, 1], a held-out test
split when there is none) -> data.py splits off validation -> Dataset. Every bad layout is a DatasetError.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from parity_models.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GRAY_MODES = frozenset({"1", "L", "LA"})
COLOR_MODES = frozenset({"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
TEST_FRACTION = 0.2  # held out per class when the data has no test split
TEST_SEED = 1
KINDS = ("folder", "npz")


@dataclass
class Arrays:
    """Train and test splits: x float32 (N, C, H, W), y int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    classes: list[str] | None = None


def parse_spec(name: str) -> tuple[str, Path] | None:
    """``folder:PATH`` | ``npz:PATH`` | a bare folder or .npz path -> (kind, path); None if it is neither."""
    kind, sep, rest = name.partition(":")
    if sep and kind in KINDS:
        return kind, Path(rest).expanduser()
    path = Path(name).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file() and path.suffix == ".npz":
        return "npz", path
    return None


def spec_name(kind: str, path: Path) -> str:
    """The dataset's name as checkpoints record it, so later commands find the same files."""
    return f"{kind}:{path.absolute()}"


def read(kind: str, path: Path) -> Arrays:
    if not path.exists():
        raise DatasetError(f"{kind} dataset {path} does not exist")
    arrays = read_folder(path) if kind == "folder" else read_npz(path)
    if int(arrays.train_y.unique().numel()) < 2:
        raise DatasetError(f"{path}: the training split has a single class; a classifier needs at least 2")
    return arrays


# ---- image folders -------------------------------------------------------------------------------------------

def read_folder(root: Path) -> Arrays:
    """``root/<class>/*`` (a held-out test split is drawn) or ``root/train/<class>/*`` + ``root/test/<class>/*``."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} is not a folder")
    train_dir = root / "train"
    if train_dir.is_dir():
        classes, train_files = _class_files(train_dir)
        test_files = _class_files(root / "test")[1] if (root / "test").is_dir() else None
    else:
        classes, train_files = _class_files(root)
        test_files = None
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c, _ in test_files or []} - set(index))
    if unknown:
        raise DatasetError(f"{root}/test has classes {unknown} that {train_dir} lacks")
    all_files = train_files + (test_files or [])
    x = _read_images([f for _, f in all_files])  # (N, C, H, W) in [0, 1]
    y = torch.tensor([index[c] for c, _ in all_files], dtype=torch.int64)
    n = len(train_files)
    if test_files is None:
        return _held_out(x, y, len(classes), classes)
    return Arrays(x[:n], y[:n], x[n:], y[n:], len(classes), classes)


def _class_files(folder: Path) -> tuple[list[str], list[tuple[str, Path]]]:
    """Sorted class names and (class, image file) pairs; hidden entries (``.DS_Store``) are skipped."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    stray = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise DatasetError(f"{folder} holds images itself ({stray[0]}, ...); put each class's images in its own "
                           f"subfolder: {folder}/<class>/*.png")
    classes = [p.name for p in entries if p.is_dir()]
    if not classes:
        raise DatasetError(f"{folder} has no class subfolders; expected {folder}/<class>/*.png")
    if len(classes) < 2:
        raise DatasetError(f"{folder} has one class ({classes[0]}); a classifier needs at least 2")
    files = [(c, f) for c in classes for f in _images_of(folder / c)]
    return classes, files


def _images_of(folder: Path) -> list[Path]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    bad = [p for p in entries if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)]
    if bad:
        what = "a folder" if bad[0].is_dir() else "not an image file"
        raise DatasetError(f"{bad[0]} is {what}; a class folder holds only images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not entries:
        raise DatasetError(f"class folder {folder} has no images")
    return entries


def _read_images(files: list[Path]) -> torch.Tensor:
    """Decode every image: all grayscale -> 1 channel, else RGB; all of one size. (N, C, H, W) float in [0, 1]."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise DatasetError("reading an image folder needs Pillow (pip install pillow)") from exc
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                images.append(img.copy())
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DatasetError(f"cannot read image {f}: {exc}") from exc
    odd = [(f, img.mode) for f, img in zip(files, images) if img.mode not in GRAY_MODES | COLOR_MODES]
    if odd:
        raise DatasetError(f"{odd[0][0]} has pixel mode {odd[0][1]} (16-bit or float); use 8-bit images")
    sizes: dict[tuple[int, int], Path] = {}
    for f, img in zip(files, images):
        sizes.setdefault(img.size, f)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise DatasetError(f"images differ in size: {f1} is {s1[0]}x{s1[1]}, {f2} is {s2[0]}x{s2[1]}; resize them "
                           f"to one size")
    mode = "L" if all(img.mode in GRAY_MODES for img in images) else "RGB"
    pixels = np.stack([np.asarray(img.convert(mode), dtype=np.uint8) for img in images])  # (N, H, W[, 3])
    pixels = pixels[:, None] if mode == "L" else pixels.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)


# ---- .npz arrays ---------------------------------------------------------------------------------------------

def read_npz(path: Path) -> Arrays:
    """x_train/y_train (+ x_test/y_test) or x/y (a test split is drawn); images (N, H, W), (N, C, H, W) or
    (N, H, W, C); x uint8 (0-255) or float (used as it is), y integer labels 0..C-1."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:  # object arrays (they need pickle, refused) or not an npz
        raise DatasetError(f"cannot read {path}: {exc} (arrays must be numeric; no pickled objects)") from exc
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    train, test = _npz_pairs(path, arrays)
    train_x, train_y = _checked_pair(path, *train)
    if test is None:
        return _held_out(train_x, train_y, int(train_y.max()) + 1)
    test_x, test_y = _checked_pair(path, *test)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"{path}: train images are {list(train_x.shape[1:])}, test images "
                           f"{list(test_x.shape[1:])}")
    return Arrays(train_x, train_y, test_x, test_y, int(max(train_y.max(), test_y.max())) + 1)


Pair = tuple[str, np.ndarray, str, np.ndarray]


def _npz_pairs(path: Path, arrays: dict[str, np.ndarray]) -> tuple[Pair, Pair | None]:
    keys = set(arrays)
    for pair in (("x_test", "y_test"), ("x_train", "y_train")):
        if len(keys & set(pair)) == 1:
            raise DatasetError(f"{path} has {sorted(keys & set(pair))[0]} without {sorted(set(pair) - keys)[0]}")
    if {"x_train", "y_train"} <= keys:
        test = ("x_test", arrays["x_test"], "y_test", arrays["y_test"]) if "x_test" in keys else None
        return ("x_train", arrays["x_train"], "y_train", arrays["y_train"]), test
    if {"x", "y"} <= keys:
        return ("x", arrays["x"], "y", arrays["y"]), None
    raise DatasetError(f"{path} has arrays {sorted(keys)}; expected x_train, y_train (and x_test, y_test) or x, y")


def _checked_pair(path: Path, xname: str, x: np.ndarray, yname: str, y: np.ndarray) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DatasetError(f"{path}: {yname} has shape {list(y.shape)}; labels are one integer per image (N,)")
    if len(x) != len(y):
        raise DatasetError(f"{path}: {xname} has {len(x)} images but {yname} has {len(y)} labels")
    if len(x) == 0:
        raise DatasetError(f"{path}: {xname} is empty")
    return _images_tensor(path, xname, x), _labels_tensor(path, yname, y)


def _images_tensor(path: Path, name: str, x: np.ndarray) -> torch.Tensor:
    """(N, H, W) | (N, C, H, W) | (N, H, W, C) -> float32 (N, C, H, W); uint8 scaled to [0, 1]."""
    if x.dtype.kind in "iu":
        if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 255):
            raise DatasetError(f"{path}: {name} is {x.dtype} with values outside 0..255; store uint8 pixels or "
                               f"floats")
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DatasetError(f"{path}: {name} has NaN or infinite values")
    else:
        raise DatasetError(f"{path}: {name} has dtype {x.dtype}; images are uint8 (0-255) or float")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)  # channels last (N, H, W, C) -> (N, C, H, W)
    elif x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise DatasetError(f"{path}: {name} has shape {list(x.shape)}; images are (N, H, W), (N, C, H, W) or "
                           f"(N, H, W, C) with C in 1, 3, 4")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels_tensor(path: Path, name: str, y: np.ndarray) -> torch.Tensor:
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {name} has dtype {y.dtype}; labels are integers 0..C-1")
    if y.min() < 0:
        raise DatasetError(f"{path}: {name} has a negative label ({int(y.min())}); labels are 0..C-1")
    return torch.from_numpy(y.astype(np.int64))


# ---- splitting -----------------------------------------------------------------------------------------------

def _held_out(x: torch.Tensor, y: torch.Tensor, num_classes: int, classes: list[str] | None = None) -> Arrays:
    """A test split of TEST_FRACTION of every class (none of a class with a single image), fixed by TEST_SEED."""
    gen = torch.Generator().manual_seed(TEST_SEED)
    test_parts, train_parts = [], []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = int(round(len(members) * TEST_FRACTION)) if len(members) > 1 else 0
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train, test = torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values
    if len(test) == 0:
        raise DatasetError(f"too few images ({len(x)}) to hold out a test split")
    return Arrays(x[train], y[train], x[test], y[test], num_classes, classes)
