"""A generated imbalanced ImageFolder tree of real images, as a user would bring one.

Class counts are not in alphabetical order and the images are 40x40 (resized up from the
shared CIFAR-10 JPEG copy, then cropped), so class ordering, groups and resizing are all
exercised.
"""

from __future__ import annotations

from pathlib import Path

#: training images per class (alphabetical order: automobile, cat, deer, frog, ship, truck)
TRAIN_COUNTS = {"ship": 150, "automobile": 130, "frog": 60, "deer": 25, "cat": 12, "truck": 8}
#: by hand: classes from most to fewest training images, and their groups (many > 100, few < 20)
FREQUENCY_ORDER = ["ship", "automobile", "frog", "deer", "cat", "truck"]
GROUPS = {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
IMAGE_SIZE = (40, 40)


def _copy_resized(source: Path, target: Path, index: int) -> None:
    from PIL import Image

    with Image.open(source) as image:
        bigger = image.convert("RGB").resize((44, 44), Image.BICUBIC)
    left, top = index % 5, (index // 5) % 5
    target.parent.mkdir(parents=True, exist_ok=True)
    bigger.crop((left, top, left + IMAGE_SIZE[0], top + IMAGE_SIZE[1])).save(target, quality=95)


def make_image_folder(
    cifar_root: Path, root: Path, test_per_class: int = 15, validation_per_class: int = 0
) -> Path:
    """``root/train/<class>/`` with :data:`TRAIN_COUNTS`, ``root/test/<class>/``
    (and ``val/``) balanced."""
    for name, count in TRAIN_COUNTS.items():
        files = sorted((cifar_root / "train" / name).iterdir())
        for index, source in enumerate(files[:count]):
            _copy_resized(source, root / "train" / name / f"{name}_{index:04d}.jpg", index)
        for index, source in enumerate(files[count : count + validation_per_class]):
            _copy_resized(source, root / "val" / name / f"{name}_{index:04d}.jpg", index)
        tests = sorted((cifar_root / "test" / name).iterdir())[:test_per_class]
        for index, source in enumerate(tests):
            _copy_resized(source, root / "test" / name / f"{name}_{index:04d}.jpg", index)
    return root


def make_new_images(cifar_root: Path, folder: Path, per_class: int = 2) -> list[Path]:
    """Unlabelled 40x40 images a user would ask predictions for (CIFAR test images
    the tree does not hold)."""
    made = []
    for name in TRAIN_COUNTS:
        for index, source in enumerate(
            sorted((cifar_root / "test" / name).iterdir())[500 : 500 + per_class]
        ):
            target = folder / f"{name}_{index}.jpg"
            _copy_resized(source, target, index)
            made.append(target)
    return made
