"""A user's own images as a dataset: image folders (``root/<class>/``, ``root/train|test/<class>/``) and .npz
arrays read into the same Dataset as the built-ins, and a clear DatasetError for every bad layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity_models import custom_data
from parity_models.data import DatasetError, load_dataset

RNG = np.random.default_rng(0)


def write_images(folder: Path, n: int, size: tuple[int, int] = (8, 6), mode: str = "L", suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,)}[mode]
    for i in range(n):
        pixels = RNG.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)  # PIL: (H, W[, C])
        Image.fromarray(pixels, mode).save(folder / f"{i}{suffix}")


def folder_dataset(root: Path, classes: dict[str, int], **kw) -> Path:
    for name, n in classes.items():
        write_images(root / name, n, **kw)
    return root


def test_class_folders_become_a_dataset_with_a_held_out_test_split(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "pets", {"cat": 30, "dog": 20, "emu": 10})
    ds = load_dataset(f"folder:{root}")
    assert ds.name == f"folder:{root.absolute()}" and ds.classes == ["cat", "dog", "emu"] and ds.num_classes == 3
    assert ds.input_shape == [1, 6, 8]  # grayscale (1, H, W)
    assert len(ds.test_x) == 12 and ds.test_y.bincount().tolist() == [6, 4, 2]  # a fifth of every class
    assert len(ds.train_x) + len(ds.val_x) == 48 and len(ds.val_x) == 4  # a tenth for validation, as built-ins
    assert 0.0 <= float(ds.train_x.min()) and float(ds.train_x.max()) <= 1.0
    again = load_dataset(str(root))  # a bare folder path works too, with the same splits
    assert again.name == ds.name and bool((again.test_x == ds.test_x).all())


def test_train_and_test_subfolders_are_used_as_given(tmp_path: Path) -> None:
    folder_dataset(tmp_path / "train", {"a": 12, "b": 8}, mode="RGB")
    folder_dataset(tmp_path / "test", {"a": 3, "b": 2}, mode="RGB")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.input_shape == [3, 6, 8] and ds.test_y.tolist() == [0, 0, 0, 1, 1]
    assert len(ds.train_x) + len(ds.val_x) == 20
    image = np.asarray(Image.open(tmp_path / "test" / "a" / "0.png"))  # (H, W, 3)
    assert np.allclose(ds.test_x[0].permute(1, 2, 0).numpy(), image / 255.0)


def test_grayscale_and_colour_mixed_are_read_as_rgb(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 6, mode="L")
    write_images(tmp_path / "b", 6, mode="RGB", suffix=".jpg")
    assert load_dataset(f"folder:{tmp_path}").input_shape == [3, 6, 8]


@pytest.mark.parametrize("layout, message", [
    ("empty", "no class subfolders"),
    ("one class", "has one class"),
    ("mixed sizes", "images differ in size"),
    ("non-image file", "not an image file"),
    ("nested folder", "is a folder"),
    ("images at the root", "holds images itself"),
    ("empty class", "has no images"),
    ("corrupt image", "cannot read image"),
    ("unknown test class", r"has classes \['z'\] that"),
    ("missing", "does not exist"),
])
def test_bad_folder_layouts_are_clear_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    if layout == "one class":
        write_images(root / "only", 5)
    elif layout != "empty" and layout != "missing":
        folder_dataset(root, {"a": 5, "b": 5})
    if layout == "mixed sizes":
        write_images(root / "c", 2, size=(9, 9))
    elif layout == "non-image file":
        (root / "a" / "labels.csv").write_text("x")
    elif layout == "nested folder":
        (root / "a" / "more").mkdir()
    elif layout == "images at the root":
        write_images(root, 1)
    elif layout == "empty class":
        (root / "c").mkdir()
    elif layout == "corrupt image":
        (root / "a" / "broken.png").write_bytes(b"not a png")
    elif layout == "unknown test class":
        folder_dataset(root / "train", {"a": 5, "b": 5})
        folder_dataset(root / "test", {"a": 2, "z": 2})
    spec = f"folder:{tmp_path / 'nowhere'}" if layout == "missing" else f"folder:{root}"
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_hidden_files_are_ignored(tmp_path: Path) -> None:
    folder_dataset(tmp_path, {"a": 6, "b": 6})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0")
    assert load_dataset(f"folder:{tmp_path}").num_classes == 2


def npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_with_train_and_test_arrays(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (40, 5, 7), dtype=np.uint8)  # (N, H, W): one channel added
    y = np.arange(40) % 4
    spec = npz(tmp_path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    ds = load_dataset(spec)
    assert ds.input_shape == [1, 5, 7] and ds.num_classes == 4 and len(ds.test_x) == 8
    assert np.allclose(ds.test_x[:, 0].numpy(), x[:8] / 255.0)
    assert load_dataset(str(tmp_path / "data.npz")).name == ds.name  # a bare .npz path too


def test_npz_x_y_gets_a_test_split_and_channels_last_is_transposed(tmp_path: Path) -> None:
    x = RNG.random((50, 6, 6, 3), dtype=np.float32)  # (N, H, W, C), floats used as they are
    ds = load_dataset(npz(tmp_path, x=x, y=np.arange(50) % 5))
    assert ds.input_shape == [3, 6, 6] and len(ds.test_x) == 10 and ds.test_y.bincount().tolist() == [2] * 5
    channels_first = x.transpose(0, 3, 1, 2)  # (N, 3, 6, 6); values kept as they are
    assert any(np.array_equal(ds.test_x[0].numpy(), image) for image in channels_first)


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((10, 4, 4), np.uint8), "y_train": np.zeros(9, np.int64)}, "10 images but y_train has 9"),
    ({"x_train": np.zeros((10, 4, 4), bool), "y_train": np.arange(10) % 2}, "dtype bool"),
    ({"x_train": np.zeros((10, 4, 4), np.uint8), "y_train": np.arange(10) % 2 * 1.0}, "labels are integers"),
    ({"x_train": np.full((10, 4, 4), 300, np.int32), "y_train": np.arange(10) % 2}, "outside 0..255"),
    ({"x_train": np.full((10, 4, 4), np.nan, np.float32), "y_train": np.arange(10) % 2}, "NaN"),
    ({"x_train": np.zeros((10, 16), np.uint8), "y_train": np.arange(10) % 2}, "images are"),
    ({"x_train": np.zeros((10, 4, 4), np.uint8), "y_train": -(np.arange(10) % 2)}, "negative label"),
    ({"x_train": np.zeros((10, 4, 4), np.uint8), "y_train": np.zeros(10, np.int64)}, "single class"),
    ({"x_train": np.zeros((10, 4, 4), np.uint8), "y_train": np.arange(10) % 2, "x_test": np.zeros((2, 4, 4))},
     "x_test without y_test"),
    ({"x_train": np.zeros((10, 4, 4), np.uint8), "y_train": np.arange(10) % 2,
      "x_test": np.zeros((2, 5, 5), np.uint8), "y_test": np.zeros(2, np.int64)}, "test images"),
    ({"images": np.zeros((10, 4, 4), np.uint8)}, "expected x_train, y_train"),
    ({"x": np.array(["a"] * 10), "y": np.arange(10) % 2}, "dtype <U1"),
])
def test_bad_npz_arrays_are_clear_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(npz(tmp_path, **arrays))


def test_npz_of_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([object()] * 10, dtype=object), y=np.arange(10) % 2)
    with pytest.raises(DatasetError, match="no pickled objects"):
        load_dataset(f"npz:{path}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_too_few_images_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least 10"):
        load_dataset(npz(tmp_path, x=np.zeros((8, 4, 4), np.uint8), y=np.arange(8) % 2))
    with pytest.raises(DatasetError, match="folder:PATH"):
        load_dataset("imagenet")
    assert custom_data.parse_spec("mnist") is None and custom_data.parse_spec("npz:x.npz") == ("npz", Path("x.npz"))
