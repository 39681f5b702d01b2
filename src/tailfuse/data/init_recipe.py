"""``tailfuse init DATA_ROOT``: recipes for one's own ImageFolder tree.

Writes ``NAME.yaml`` (stage 1, on the shipped ``image_folder`` recipe) and
``NAME_h2t.yaml`` (H2T stage 2, on ``image_folder_dr_h2t``, whose ``init.recipe`` is
``NAME.yaml`` next to it), and prints the class counts and groups the run will use.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import yaml

from tailfuse.config import load_recipe
from tailfuse.errors import DataError, TailfuseError
from tailfuse.files import write_text_atomically

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def _image_sizes(root: Path, limit: int = 200) -> Counter:
    """(width, height) of up to ``limit`` images under ``root`` (headers only)."""
    from PIL import Image

    sizes: Counter = Counter()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with Image.open(path) as image:
                    sizes[image.size] += 1
            except OSError:
                continue
            if sum(sizes.values()) >= limit:
                break
    return sizes


def write_init_recipes(
    data_root: str | Path,
    out_dir: str | Path = ".",
    name: str | None = None,
    image_size: int = 32,
    validation: float = 0.1,
    test: float = 0.2,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write the stage-1 and stage-2 recipes for ``data_root``; returns their paths."""
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{data_root} is not a folder")
    name = name or re.sub(r"[^A-Za-z0-9_]+", "_", root.name).strip("_") or "my_data"
    layout = "train/test" if (root / "train").is_dir() else "split"
    if layout == "train/test" and not (root / "test").is_dir():
        raise DataError(
            f"{root} has train/ but no test/; add test/<class>/ or put the class "
            f"folders directly in {root}"
        )
    data: dict = {"root": str(root), "image_size": image_size}
    if layout == "split":
        data["split"] = {"validation": validation, "test": test, "seed": 0}
    out_dir = Path(out_dir)
    stage1_path, stage2_path = out_dir / f"{name}.yaml", out_dir / f"{name}_h2t.yaml"
    for path in (stage1_path, stage2_path):
        if path.exists() and not force:
            raise TailfuseError(
                f"{path} exists; pass --force to replace it, or choose --name / --out"
            )
    stage1 = {"base": "image_folder", "name": name, "data": data}
    stage2 = {
        "base": "image_folder_dr_h2t",
        "name": f"{name}_h2t",
        "data": data,
        "init": {"recipe": stage1_path.name},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (
        f"# {name}: your ImageFolder tree {root} "
        f"({'train/test folders' if layout == 'train/test' else 'one tree, split per class'})"
    )
    write_text_atomically(
        stage1_path,
        f"{header}, stage 1 (written by `tailfuse init`).\n"
        + yaml.safe_dump(stage1, sort_keys=False),
    )
    write_text_atomically(
        stage2_path,
        f"{header}, H2T stage 2 on {stage1_path.name} (written by `tailfuse init`).\n"
        + yaml.safe_dump(stage2, sort_keys=False),
    )
    from tailfuse.data.prepare import plan_subset

    try:
        plan = plan_subset(load_recipe(stage1_path).data)
    except TailfuseError:
        stage1_path.unlink()
        stage2_path.unlink()
        raise
    summary = plan.summary()
    counts = ", ".join(f"{n} {c}" for n, c in zip(plan.class_names, plan.class_counts, strict=True))
    print(
        f"{len(plan.class_names)} classes, {summary['total']} training images "
        f"(most to fewest): {counts}"
    )
    print(
        "groups: "
        + "; ".join(f"{group} {len(members)}" for group, members in plan.groups.items())
        + " (many > 100, few < 20 training images: data.groups.many_above / few_below)"
    )
    print(
        f"test images {summary['test_size']}, validation images {summary['validation_size']}"
        + (" (val/ folder)" if (root / "val").is_dir() and layout != "split" else "")
    )
    sizes = _image_sizes(root)
    if sizes and any(size != (image_size, image_size) for size in sizes):
        common = ", ".join(f"{w}x{h}" for (w, h), _ in sizes.most_common(3))
        print(
            f"images are {common}, ...; they will be resized to "
            f"{image_size}x{image_size} (--image-size)"
        )
    print(f"wrote {stage1_path} and {stage2_path}")
    print(f"next: tailfuse train {stage1_path} --out runs/{name}")
    return stage1_path, stage2_path
