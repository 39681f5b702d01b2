"""Recipe schema, YAML loading and dotted overrides (``key.sub=value``).

A recipe is a YAML file that overrides the defaults below; ``base: other.yaml`` inherits
another recipe first. The resolved recipe is validated by pydantic: unknown keys and bad
values stop with one message that names the key. Method options are validated by the
schema the method registers in :data:`METHOD_OPTIONS` (filled in ``tailfuse.methods``).
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from tailfuse.errors import ConfigError


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- data


class GroupsConfig(StrictModel):
    """Many/medium/few class groups (spec h2t §4.3).

    ``by: index`` splits the frequency-sorted classes at ``boundaries`` [a, b] into
    [0, a), [a, b), [b, C). ``by: count`` uses training counts: many > ``many_above``,
    few < ``few_below``, medium otherwise.
    """

    by: Literal["index", "count"] = "count"
    boundaries: tuple[int, int] | None = None
    many_above: int = 100
    few_below: int = 20

    @model_validator(mode="after")
    def _check(self) -> GroupsConfig:
        if self.by == "index":
            if self.boundaries is None:
                raise ValueError("groups.by=index needs groups.boundaries: [a, b]")
            if not 0 < self.boundaries[0] <= self.boundaries[1]:
                raise ValueError("groups.boundaries must satisfy 0 < a <= b")
        if self.few_below > self.many_above + 1:
            raise ValueError("groups.few_below must not exceed groups.many_above + 1")
        return self


class AugmentConfig(StrictModel):
    """Training augmentation.

    ``cifar`` (device storage): pad-and-crop, flip, normalise, batched on the device.
    ``imagenet`` (streamed storage): RandomResizedCrop(crop_size), flip, ColorJitter
    (brightness/contrast/saturation ``color_jitter``, hue 0), normalise; evaluation
    resizes the short side to ``resize`` and centre-crops ``crop_size`` (spec ffn §3.4,
    spec h2t §2.5). ``crop_scale``: RandomResizedCrop's area range (MSCOCO-GLT: 0.5–1).
    ``rand_augment``: torchvision's RandAugment (``rand_augment_ops`` ops of magnitude
    ``rand_augment_magnitude``) per image after crop and flip (spec glt_ifl §4 "RandAug";
    the authors used the PyPI ``randaugment`` package, a UDA-style variant).
    """

    kind: Literal["cifar", "imagenet"] = "cifar"
    crop_padding: int = Field(4, ge=0)
    horizontal_flip: bool = True
    crop_size: int = Field(224, ge=8)
    resize: int = Field(256, ge=8)
    color_jitter: float = Field(0.4, ge=0.0)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    rand_augment: bool = False
    rand_augment_ops: int = Field(2, ge=1)
    rand_augment_magnitude: int = Field(9, ge=0, le=30)
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)


class GltConfig(StrictModel):
    """CIFAR-10-GLT, built from ``data.root`` (an ImageFolder tree) when a run starts (spec glt_ifl §7.2).

    ``attribute``: ``tint`` (colour tint λ = ``tint_strength``) or ``rotation``
    (0/90/180°); ``mode``: ``cyclic`` (rank r of class c is value (c + r) mod 3: a
    cross-class spurious cue) or ``aligned`` (rank r is value r in every class: pure
    within-class rarity). ``train_set``: ``glt`` trains on Train-GLT (CLT and GLT
    protocols), ``cbl`` on Train-CBL (ALT protocol).
    """

    attribute: Literal["tint", "rotation"] = "tint"
    mode: Literal["cyclic", "aligned"] = "cyclic"
    rho: float = Field(100.0, ge=1.0)
    seed: int = 0
    train_set: Literal["glt", "cbl"] = "glt"
    tint_strength: float = Field(0.4, ge=0.0, le=1.0)
    max_per_class: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    cbl_val_per_class: int = Field(30, ge=0)
    gbl_per_rank: int = Field(100, ge=1)
    cbl_test_per_class: int = Field(300, ge=1)
    test_lt_pool_per_class: int = Field(400, ge=0)


class DataConfig(StrictModel):
    """Where the images are and which long-tailed subset of them to train on.

    ``source: glt`` reads a GLT annotation file (``annotation``: ImageNet-GLT, MSCOCO-GLT
    or a built CIFAR-10-GLT; ``annotation_cbl``: the Train-CBL file, used when
    ``glt.train_set`` is ``cbl``); relative image keys are joined to ``root`` and
    ``replace_prefix`` rewrites absolute ones. ``source: cifar10_glt`` builds CIFAR-10-GLT
    from ``root`` with the ``glt`` options. Both take train/val/test sets from the
    annotation: the long-tail keys (:data:`GLT_IGNORED_KEYS`) are refused unless left at
    their defaults (``profile: none`` is accepted).
    """

    source: Literal["cifar10", "cifar100", "image_folder", "list_file", "glt", "cifar10_glt"] = "cifar10"
    root: str = "./data"
    annotation: str | None = None
    annotation_cbl: str | None = None
    replace_prefix: dict[str, str] = {}
    glt: GltConfig = GltConfig()
    train_list: str | None = None
    test_list: str | None = None
    storage: Literal["device", "stream"] = "device"
    num_workers: int = Field(0, ge=0)
    download: bool = True
    profile: Literal["exponential", "step", "none"] = "exponential"
    imbalance_factor: float = Field(100.0, ge=1.0)
    max_per_class: int | None = Field(None, ge=1)
    subset_seed: int = 0
    test_per_class: int | None = Field(None, ge=1)
    validation_per_class: int = Field(0, ge=0)
    image_size: int = Field(32, ge=8)
    cache_dir: str | None = None
    groups: GroupsConfig = GroupsConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.source == "list_file" and not (self.train_list and self.test_list):
            raise ValueError("data.source=list_file needs data.train_list and data.test_list")
        if self.source == "glt" and not self.annotation:
            raise ValueError("data.source=glt needs data.annotation (a GLT annotation JSON)")
        if self.source == "glt" and self.glt.train_set == "cbl" and not self.annotation_cbl:
            raise ValueError("data.glt.train_set=cbl with data.source=glt needs data.annotation_cbl (the Train-CBL file)")
        if self.storage == "stream" and self.source in ("cifar10", "cifar100", "cifar10_glt"):
            raise ValueError("data.storage=stream needs an image_folder, list_file or glt source")
        if (self.augment.kind == "imagenet") != (self.storage == "stream"):
            raise ValueError("data.augment.kind=imagenet goes with data.storage=stream, cifar with device")
        if self.source in ("glt", "cifar10_glt"):
            _refuse_keys_glt_ignores(self)
        return self


#: Long-tail keys a GLT source never reads: its splits, sizes and groups come from the annotation.
GLT_IGNORED_KEYS = ("profile", "imbalance_factor", "max_per_class", "validation_per_class", "test_per_class", "groups")


def _refuse_keys_glt_ignores(data: DataConfig) -> None:
    """A GLT source refuses long-tail keys changed from their defaults (``profile: none`` is fine)."""
    ignored = []
    for key in GLT_IGNORED_KEYS:
        value = getattr(data, key)
        if value != DataConfig.model_fields[key].default and not (key == "profile" and value == "none"):
            shown = value.model_dump() if isinstance(value, BaseModel) else value
            ignored.append(f"data.{key}={shown}")
    if ignored:
        sizes = "data.glt.* sets CIFAR-10-GLT's sizes" if data.source == "cifar10_glt" else "the annotation sets them"
        raise ValueError(
            f"data.source={data.source} does not use {', '.join(ignored)}: splits, sizes and "
            f"class groups come from the GLT annotation ({sizes}); remove the key"
        )


# -------------------------------------------------------------------------- model


class ModelConfig(StrictModel):
    """Backbone (returns the last feature map before pooling) and head (pools).

    ``head_bias``: whether the linear head has a bias (the GLT code's has none).
    ``backbone_options``: keyword options of multi-expert backbones (``num_experts``,
    ``reduce_dimension``); multi-expert heads: ``expert_linear`` / ``expert_cosine`` (one
    layer per expert, logits averaged), ``bbn`` (BBN's two-branch classifier), ``reslt``.
    """

    backbone: str = "resnet32"
    backbone_options: dict[str, int | float | bool | str] = {}
    head: Literal["linear", "cosine", "expert_linear", "expert_cosine", "bbn", "reslt"] = "linear"
    head_bias: bool = True
    cosine_scale: float = Field(30.0, gt=0)
    weights: str | None = None


# --------------------------------------------------------------------- optimiser


class OptimizerConfig(StrictModel):
    """SGD settings. Weight decay applies to every trained parameter (spec h2t §2.2)."""

    name: Literal["sgd"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(2e-4, ge=0)
    nesterov: bool = False


class ScheduleConfig(StrictModel):
    """Learning rate set once per epoch: linear warm-up, then multistep, cosine or constant.

    ``lr_factor`` multiplies the whole schedule (MiSLAS/H2T stage 2: peak = lr_factor·lr).
    """

    name: Literal["multistep", "cosine", "constant"] = "multistep"
    warmup_epochs: int = Field(0, ge=0)
    milestones: list[int] = [160, 180]
    gamma: float = Field(0.1, gt=0)
    lr_factor: float = Field(1.0, gt=0)


# ------------------------------------------------------------------------- train


class TrainConfig(StrictModel):
    """Loop settings: epochs, global batch size, seed, device, precision, logging."""

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True
    eval_every: int = Field(1, ge=0)
    eval_batch_size: int = Field(512, ge=1)
    selection: Literal["auto", "final", "best_validation", "best_test"] = "auto"
    progress: bool = True
    max_steps_per_epoch: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError("train.device must be auto, cpu or cuda[:N]")
        return value


class StageSource(StrictModel):
    """A trained model a stage starts from: a checkpoint file, or a recipe trained when missing.

    ``checkpoint`` names a file; otherwise the run lives in ``run_dir`` (default: a sibling
    of this run's directory, named after ``recipe``) and is trained there from ``recipe``
    (+ ``overrides``, always on this recipe's ``data`` section) when its final checkpoint
    does not exist yet.
    """

    recipe: str | None = None
    overrides: list[str] = []
    checkpoint: str | None = None
    run_dir: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StageSource:
        if not (self.recipe or self.checkpoint):
            raise ValueError("a stage source needs a recipe or a checkpoint")
        return self


class InitConfig(StageSource):
    """Where a later stage starts from (stage 2 from stage 1).

    The main source initialises the model (``load: backbone`` keeps the new head);
    ``auxiliary`` names further trained models a method uses (FFN's CE backbone), handed
    to the method by name.
    """

    load: Literal["all", "backbone"] = "all"
    auxiliary: dict[str, StageSource] = {}


# ------------------------------------------------------------------------ method

#: Method name -> pydantic model of its options. Filled by ``tailfuse.methods``.
METHOD_OPTIONS: dict[str, type[BaseModel]] = {}


def register_method_options(name: str):
    """Class decorator: make ``name`` a valid ``method.name`` with these options."""

    def decorator(options_class: type[BaseModel]) -> type[BaseModel]:
        METHOD_OPTIONS[name] = options_class
        return options_class

    return decorator


class RunConfig(StrictModel):
    """One resolved recipe: everything a run needs, dumped to ``config.yaml``."""

    name: str = "run"
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    method: SerializeAsAny[BaseModel] = Field(default_factory=lambda: {"name": "erm"})
    init: InitConfig | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> BaseModel:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError("method must be a mapping with a 'name'")
        name = value["name"]
        if name not in METHOD_OPTIONS:
            known = ", ".join(sorted(METHOD_OPTIONS)) or "(none registered)"
            raise ValueError(f"unknown method '{name}'; known methods: {known}")
        return METHOD_OPTIONS[name](**value)

    @model_validator(mode="after")
    def _check_method_against_run(self) -> RunConfig:
        """Let the method's options check themselves against the rest (``check_run``, optional)."""
        check_run = getattr(self.method, "check_run", None)
        if callable(check_run):
            check_run(self)
        return self


# ------------------------------------------------------------------------ loading


def builtin_recipe_dir() -> Path:
    """The folder of recipes shipped inside the package."""
    return Path(str(resources.files("tailfuse") / "recipes"))


def find_recipe(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """Resolve a recipe argument: an existing path, or the name of a shipped recipe."""
    candidate = Path(name_or_path)
    options = [candidate]
    if relative_to is not None and not candidate.is_absolute():
        options.insert(0, relative_to / candidate)
    stem = candidate.name[:-5] if candidate.name.endswith(".yaml") else candidate.name
    options.append(builtin_recipe_dir() / f"{stem}.yaml")
    for option in options:
        if option.is_file():
            return option
    shipped = ", ".join(sorted(p.stem for p in builtin_recipe_dir().glob("*.yaml")))
    raise ConfigError(
        f"recipe '{name_or_path}' not found: not a file, and not a shipped recipe ({shipped})"
    )


def _names_differ(base: object, override: object) -> bool:
    return isinstance(base, dict) and "name" in override and "name" in base and base["name"] != override["name"]


def _deep_merge(base: dict, override: dict) -> dict:
    """Merge ``override`` into ``base``; a section whose ``name`` changes is replaced, not merged."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not _names_differ(merged[key], value):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_recipe_dict(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe file into a dict, following ``base:`` chains."""
    path = find_recipe(name_or_path, _seen[-1].parent if _seen else None).resolve()
    if path in _seen:
        raise ConfigError(f"recipe base cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"recipe {path} must be a mapping at the top level")
    base = content.pop("base", None)
    if base is None:
        return content
    return _deep_merge(read_recipe_dict(base, (*_seen, path)), content)


def apply_overrides(recipe: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``1e-3``, ``[1,2]``, ``true``).

    Setting a section's ``name`` to another value (``method.name=crt``) starts that
    section afresh: options of the previous method do not carry over.
    """
    result = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw_value = item.split("=", 1)
        try:
            value = yaml.safe_load(raw_value) if raw_value != "" else None
        except yaml.YAMLError:
            value = raw_value
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
            except ValueError:
                pass
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
            node = child
        if parts[-1] == "name" and node.get("name", value) != value:
            node.clear()
        node[parts[-1]] = value
    return result


def format_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into one message naming each bad key."""
    lines = []
    for detail in error.errors():
        location = ".".join(str(part) for part in detail["loc"] if part != "__root__")
        message = detail["msg"]
        if detail["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{location or '(recipe)'}: {message}")
    return f"invalid recipe {source}: " + "; ".join(lines)


def build_config(recipe: dict, source: str = "(recipe)") -> RunConfig:
    """Validate a recipe dict into a :class:`RunConfig`."""
    try:
        return RunConfig.model_validate(recipe)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, merge, override and validate a recipe. The one entry point for recipes."""
    recipe = apply_overrides(read_recipe_dict(name_or_path), list(overrides or []))
    return build_config(recipe, str(name_or_path))


def config_to_dict(config: RunConfig) -> dict:
    """The resolved recipe as plain data (what ``config.yaml`` holds)."""
    return config.model_dump(mode="json")
