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

from tailfuse.errors import ConfigError, did_you_mean
from tailfuse.files import read_yaml


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
    """CIFAR-10-GLT, built from ``data.root`` (an ImageFolder tree) when a run
    starts (spec glt_ifl §7.2).

    ``attribute``: ``tint`` (colour tint λ = ``tint_strength``) or ``rotation``
    (0/90/180°); ``mode``: ``cyclic`` (rank r of class c is value (c + r) mod 3: a
    cross-class spurious cue) or ``aligned`` (rank r is value r in every class: pure
    within-class rarity). ``train_set``: ``glt`` trains on Train-GLT (CLT and GLT
    protocols), ``cbl`` on Train-CBL (ALT protocol).
    """

    attribute: Literal["tint", "rotation"] = "tint"
    mode: Literal["cyclic", "aligned"] = "cyclic"
    rho: float = Field(100.0, ge=1.0)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seed range
    train_set: Literal["glt", "cbl"] = "glt"
    tint_strength: float = Field(0.4, ge=0.0, le=1.0)
    max_per_class: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    cbl_val_per_class: int = Field(30, ge=0)
    gbl_per_rank: int = Field(100, ge=1)
    cbl_test_per_class: int = Field(300, ge=1)
    test_lt_pool_per_class: int = Field(400, ge=0)


class SplitConfig(StrictModel):
    """Split one ImageFolder tree (``root/<class>/``) into train/validation/test.

    Per class, a seeded shuffle puts ``round(n·test)`` images in the test set and
    ``round(n·validation)`` in the validation set (stratified); the rest train.
    """

    validation: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seed range


class DataConfig(StrictModel):
    """Where the images are and which long-tailed subset of them to train on.

    ``source: glt`` reads a GLT annotation file (``annotation``: ImageNet-GLT, MSCOCO-GLT
    or a built CIFAR-10-GLT; ``annotation_cbl``: the Train-CBL file, used when
    ``glt.train_set`` is ``cbl``); relative image keys are joined to ``root`` and
    ``replace_prefix`` rewrites absolute ones. ``source: cifar10_glt`` builds CIFAR-10-GLT
    from ``root`` with the ``glt`` options. Both take train/val/test sets from the
    annotation: the long-tail keys (:data:`GLT_IGNORED_KEYS`) are refused unless left at
    their defaults (``profile: none`` is accepted); ``source: list_file`` reads
    ``relative/path label`` lines (ImageNet-LT, Places-LT, iNaturalist txt lists) or an
    iNaturalist 2018 JSON file (``*.json``: ``images``, ``annotations``, ``categories``).
    """

    source: Literal["cifar10", "cifar100", "image_folder", "list_file", "glt", "cifar10_glt"] = (
        "cifar10"
    )
    root: str = "./data"
    annotation: str | None = None
    annotation_cbl: str | None = None
    replace_prefix: dict[str, str] = {}
    glt: GltConfig = GltConfig()
    train_list: str | None = None
    test_list: str | None = None
    #: list files: ``listed`` keeps their labels; ``frequency`` renumbers classes by descending
    #: training count, ties in listed order (spec h2t §4.2: ImageNet-LT, iNaturalist, Places-LT)
    label_order: Literal["listed", "frequency"] = "listed"
    storage: Literal["device", "stream"] = "device"
    num_workers: int = Field(0, ge=0)
    download: bool = True
    profile: Literal["exponential", "step", "none"] = "exponential"
    imbalance_factor: float = Field(100.0, ge=1.0)
    max_per_class: int | None = Field(None, ge=1)
    subset_seed: int = Field(0, ge=0, lt=2**32)
    test_per_class: int | None = Field(None, ge=1)
    validation_per_class: int = Field(0, ge=0)
    image_size: int = Field(32, ge=8)
    #: ``frequency``: class 0 has the most training images (ties keep name
    #: order); ``name``: folder order
    class_order: Literal["name", "frequency"] = "name"
    #: image_folder only: split one tree ``root/<class>/`` instead of
    #: reading ``train/`` and ``test/``
    split: SplitConfig | None = None
    cache_dir: str | None = None
    groups: GroupsConfig = GroupsConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.split is not None and self.source != "image_folder":
            raise ValueError("data.split applies to data.source=image_folder")
        if self.split is not None and self.split.validation + self.split.test >= 1.0:
            raise ValueError(
                "data.split.validation + data.split.test must leave images to train on"
            )
        if self.source == "list_file" and not (self.train_list and self.test_list):
            raise ValueError("data.source=list_file needs data.train_list and data.test_list")
        if self.source == "glt" and not self.annotation:
            raise ValueError("data.source=glt needs data.annotation (a GLT annotation JSON)")
        if self.source == "glt" and self.glt.train_set == "cbl" and not self.annotation_cbl:
            raise ValueError(
                "data.glt.train_set=cbl with data.source=glt needs "
                "data.annotation_cbl (the Train-CBL file)"
            )
        if self.storage == "stream" and self.source in ("cifar10", "cifar100", "cifar10_glt"):
            raise ValueError("data.storage=stream needs an image_folder, list_file or glt source")
        if (self.augment.kind == "imagenet") != (self.storage == "stream"):
            raise ValueError(
                "data.augment.kind=imagenet goes with data.storage=stream, cifar with device"
            )
        if self.source in ("glt", "cifar10_glt"):
            _refuse_keys_glt_ignores(self)
        return self


#: Long-tail keys a GLT source never reads: its splits, sizes and groups come from the annotation.
GLT_IGNORED_KEYS = (
    "profile",
    "imbalance_factor",
    "max_per_class",
    "validation_per_class",
    "test_per_class",
    "groups",
    "subset_seed",
    "class_order",
    "label_order",
)


def _refuse_keys_glt_ignores(data: DataConfig) -> None:
    """A GLT source refuses long-tail keys changed from their defaults
    (``profile: none`` is fine)."""
    ignored = []
    for key in GLT_IGNORED_KEYS:
        value = getattr(data, key)
        if value != DataConfig.model_fields[key].default and not (
            key == "profile" and value == "none"
        ):
            shown = value.model_dump() if isinstance(value, BaseModel) else value
            ignored.append(f"data.{key}={shown}")
    if ignored:
        sizes = (
            "data.glt.* sets CIFAR-10-GLT's sizes"
            if data.source == "cifar10_glt"
            else "the annotation sets them"
        )
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
    layer per expert, logits averaged), ``bbn`` (BBN's two-branch classifier), ``reslt``
    (ResLT's BatchNorm branches, CIFAR) and ``reslt_channel_split`` (ResLT's ImageNet head on
    ``backbone_options.reslt_block``; ``reslt_eval_weight_power``: its test-time γ).
    """

    backbone: str = "resnet32"
    backbone_options: dict[str, int | float | bool | str] = {}
    head: Literal[
        "linear", "cosine", "expert_linear", "expert_cosine", "bbn", "reslt", "reslt_channel_split"
    ] = "linear"
    head_bias: bool = True
    cosine_scale: float = Field(30.0, gt=0)
    #: ResLT's ImageNet head at evaluation: class weights divided by their norm to this power
    reslt_eval_weight_power: float = Field(0.7, ge=0)
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
    """Loop settings: epochs, global batch size, seed, device, precision, logging.

    ``batch_size`` is the global batch: under torchrun each process trains on its share.
    """

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seed range
    deterministic: bool = False
    device: str = "auto"
    #: ``fp64``: float64 weights and images, for parity checks (DDP vs one process) only;
    #: ``auto``: bf16 where the device computes bfloat16 natively, fp32 elsewhere
    precision: Literal["fp32", "bf16", "fp16", "fp64", "auto"] = "fp32"
    channels_last: bool = True
    eval_every: int = Field(1, ge=0)
    eval_batch_size: int = Field(512, ge=1)
    selection: Literal["auto", "final", "best_validation", "best_test"] = "auto"
    progress: bool = True
    #: also write each epoch's record to RUN/tensorboard (needs the ``tensorboard`` extra)
    tensorboard: bool = False
    max_steps_per_epoch: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    #: under torchrun: BatchNorm statistics of the global batch instead of each process's share
    sync_batchnorm: bool = False
    #: torch.compile the backbone and head (CUDA; first steps are slower while it compiles)
    compile: bool = False
    #: steps between checks that the loss stayed finite (one host sync each; 0: at epoch end only)
    check_finite_every: int = Field(50, ge=0)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError("train.device must be auto, cpu or cuda[:N]")
        return value


def check_path_name(value: str, what: str) -> str:
    """Refuse a name that becomes a path component but would leave its folder.

    Run names name sibling run directories (a stage-1 run next to its stage 2) and sweep
    values name sub-folders, so ``../x``, ``/abs``, ``a/b``, ``.`` or ``..`` could write
    outside the output folder (issue 10 item 10).
    """
    if (
        not value
        or value in (".", "..")
        or any(character in value for character in ("/", "\\", "\0"))
        or value != value.strip()
    ):
        raise ValueError(
            f"{what} {value!r} is used as a folder name: it must be non-empty, without '/', '\\', "
            "surrounding spaces, and not '.' or '..'"
        )
    return value


class StageSource(StrictModel):
    """A trained model a stage starts from: a checkpoint file, or a recipe trained when missing.

    ``checkpoint`` names a file; otherwise the run lives in ``run_dir`` (default: a sibling
    of this run's directory, named after ``recipe``) and is trained there from ``recipe``
    (+ ``overrides``, always on this recipe's ``data`` section) when its final checkpoint
    does not exist yet. ``select`` picks that run's ``last.pt`` (default) or the checkpoint
    its ``train.selection`` rule kept (``best_validation``, ``best_test``: FFN's authors load
    their best-on-test stage-1 checkpoints, spec ffn §1.1). ``subset_seed`` trains that run
    on another ``data.subset_seed`` and accepts its different subset of the same class
    counts (FFN's code: stage 1 on 666, stage 2 on 0, spec ffn §6.7); off by default.
    """

    recipe: str | None = None
    overrides: list[str] = []
    checkpoint: str | None = None
    run_dir: str | None = None
    #: which checkpoint of the run: its final one, or the one its selection rule kept
    select: Literal["last", "best_validation", "best_test"] = "last"
    #: train (and accept) the run on this data.subset_seed instead of this recipe's (FFN's quirk)
    subset_seed: int | None = None

    @model_validator(mode="after")
    def _check(self) -> StageSource:
        if not (self.recipe or self.checkpoint):
            raise ValueError("a stage source needs a recipe or a checkpoint")
        if self.checkpoint and self.select != "last":
            raise ValueError(
                "select chooses a checkpoint of a run directory; checkpoint already names the file"
            )
        return self


class InitConfig(StageSource):
    """Where a later stage starts from (stage 2 from stage 1).

    The main source initialises the model (``load: backbone`` keeps the new head);
    ``auxiliary`` names further trained models a method uses (FFN's CE backbone), handed
    to the method by name.
    """

    load: Literal["all", "backbone"] = "all"
    auxiliary: dict[str, StageSource] = {}
    #: under train.selection=best_test, score the initial model too (H2T and MiSLAS start
    #: their best accuracy from the stage-1 checkpoint's, spec h2t §4.4)
    inherit_best: bool = False

    @field_validator("auxiliary")
    @classmethod
    def _auxiliary_names(cls, value: dict[str, StageSource]) -> dict[str, StageSource]:
        for name in value:  # a sweep trains each into OUT/stage1_<name>
            check_path_name(name, "init.auxiliary name")
        return value


# ------------------------------------------------------------------------ method

#: Method name -> pydantic model of its options. Filled by ``tailfuse.methods``.
METHOD_OPTIONS: dict[str, type[BaseModel]] = {}

#: Losses that add margins to raw cosines and apply their own scale (filled by ``tailfuse.losses``).
RAW_COSINE_LOSSES: set[str] = set()


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
    #: plugin modules imported before the recipe is validated: module names, or ``.py`` files
    #: (relative to the recipe's folder) that register methods, backbones, losses or samplers
    imports: list[str] = []
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    method: SerializeAsAny[BaseModel] = Field(default_factory=lambda: {"name": "erm"})
    init: InitConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_path_name(value, "name")

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> BaseModel:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError("method must be a mapping with a 'name'")
        name = value["name"]
        if name not in METHOD_OPTIONS:
            from tailfuse.plugins import load_plugins

            load_plugins()  # the built-in methods and entry-point plugins, when not loaded yet
        if name not in METHOD_OPTIONS:
            known = ", ".join(sorted(METHOD_OPTIONS)) or "(none registered)"
            raise ValueError(
                f"unknown method '{name}'{did_you_mean(name, METHOD_OPTIONS)}; known methods: "
                f"{known}"
            )
        return METHOD_OPTIONS[name](**value)

    @model_validator(mode="after")
    def _check_method_against_run(self) -> RunConfig:
        """Let the method's options check themselves against the rest (``check_run``, optional)."""
        check_run = getattr(self.method, "check_run", None)
        if callable(check_run):
            check_run(self)
        return self

    @model_validator(mode="after")
    def _margin_losses_need_raw_cosines(self) -> RunConfig:
        loss = getattr(self.method, "loss", None)
        raw_cosines = self.model.head == "cosine" and self.model.cosine_scale == 1.0
        if loss in RAW_COSINE_LOSSES and not raw_cosines:
            raise ValueError(
                f"loss '{loss}' adds its margins to raw cosines and applies its own scale s: "
                "it needs "
                f"model.head=cosine with model.cosine_scale=1 (got head={self.model.head}, "
                f"cosine_scale={self.model.cosine_scale:g})"
            )
        return self


# ------------------------------------------------------------------------ loading


def builtin_recipe_dir() -> Path:
    """The folder of recipes shipped inside the package."""
    return Path(str(resources.files("tailfuse") / "recipes"))


def find_recipe(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """Resolve a recipe argument: an existing path, or the name of a shipped recipe.

    Only a bare name (no folder part) may mean a shipped recipe: a path that does not
    exist is an error, never the shipped recipe of the same stem.
    """
    candidate = Path(name_or_path)
    options = [candidate]
    if relative_to is not None and not candidate.is_absolute():
        options.insert(0, relative_to / candidate)
    bare_name = len(candidate.parts) == 1 and str(name_or_path) not in (".", "..")
    if bare_name:
        stem = candidate.name[:-5] if candidate.name.endswith(".yaml") else candidate.name
        options.append(builtin_recipe_dir() / f"{stem}.yaml")
    for option in options:
        if option.is_file():
            return option
    if not bare_name:
        where = " or ".join(str(option) for option in options)
        raise ConfigError(f"recipe file {where} does not exist")
    shipped = [p.stem for p in builtin_recipe_dir().glob("[!_]*.yaml")]
    raise ConfigError(
        f"recipe '{name_or_path}' not found: not a file, and not a shipped recipe"
        f"{did_you_mean(stem, shipped)} (`tailfuse recipes` lists them)"
    )


def _names_differ(base: object, override: object) -> bool:
    return (
        isinstance(base, dict)
        and "name" in override
        and "name" in base
        and base["name"] != override["name"]
    )


def _deep_merge(base: dict, override: dict) -> dict:
    """Merge ``override`` into ``base``; a section whose ``name`` changes
    is replaced, not merged."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if (
            isinstance(value, dict)
            and isinstance(merged.get(key), dict)
            and not _names_differ(merged[key], value)
        ):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_recipe_dict(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe file into a dict, following ``base:`` chains."""
    path = find_recipe(name_or_path, _seen[-1].parent if _seen else None).resolve()
    if path in _seen:
        raise ConfigError(f"recipe base cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    content = read_yaml(path, "recipe") or {}
    if not isinstance(content, dict):
        raise ConfigError(f"recipe {path} must be a mapping at the top level")
    _resolve_relative_references(content, path.parent)
    base = content.pop("base", None)
    if base is None:
        return content
    return _deep_merge(read_recipe_dict(base, (*_seen, path)), content)


def _resolve_relative_references(content: dict, folder: Path) -> None:
    """Make ``init.recipe`` (and auxiliary recipes) and ``.py`` imports absolute, like ``base:``.

    A relative reference that names a file next to the recipe becomes that file's path;
    anything else (a shipped recipe name, a module name) is left as written.
    """

    def resolved(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            candidate = folder / value
            if candidate.is_file():
                return str(candidate.resolve())
        return value

    init = content.get("init")
    if isinstance(init, dict):
        sources = [
            init,
            *(s for s in (init.get("auxiliary") or {}).values() if isinstance(s, dict)),
        ]
        for source in sources:
            if "recipe" in source:
                source["recipe"] = resolved(source["recipe"])
    if isinstance(content.get("imports"), list):
        content["imports"] = [resolved(item) for item in content["imports"]]


#: Override prefixes that describe one stage only and so do not reach the stage 1 it trains.
STAGE_ONLY_KEYS = ("method", "init", "name", "description")


def pass_overrides_to_earlier_stages(recipe: dict, overrides: list[str]) -> dict:
    """Prepend the user's overrides to ``init.overrides`` (and every auxiliary source's).

    So ``tailfuse train STAGE2 train.epochs=5`` trains a 5-epoch stage 1 too. Keys under
    :data:`STAGE_ONLY_KEYS` stay with this stage; overrides written in the recipe's own
    ``init.overrides`` come after, so they win.
    """
    shared = [
        item
        for item in overrides
        if item.split("=", 1)[0].strip().split(".")[0] not in STAGE_ONLY_KEYS
    ]
    init = recipe.get("init")
    if not shared or not isinstance(init, dict):
        return recipe
    result = copy.deepcopy(recipe)
    sources = [
        result["init"],
        *(s for s in (result["init"].get("auxiliary") or {}).values() if isinstance(s, dict)),
    ]
    for source in sources:
        if not source.get("checkpoint"):
            source["overrides"] = [*shared, *(source.get("overrides") or [])]
    return result


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
        # a section's new name (method.name=crt) starts it afresh; the run's own name does not
        if len(parts) > 1 and parts[-1] == "name" and node.get("name", value) != value:
            node.clear()
        node[parts[-1]] = value
    return result


def _pydantic_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The config model inside a field annotation, and whether it sits in a dict (keyed by name)."""
    from typing import get_args, get_origin

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for argument in get_args(annotation):
        model, _ = _pydantic_model(argument)
        if model is not None:
            return model, get_origin(annotation) is dict
    return None, False


def _known_keys(section: list, recipe: dict) -> list[str]:
    """The valid keys of the recipe section at ``section`` (for close-match suggestions)."""
    model: type[BaseModel] | None = RunConfig
    keyed = False
    for part in section:
        if keyed:  # a name inside a dict of sections (init.auxiliary.<name>)
            keyed = False
            continue
        if model is RunConfig and part == "method":
            method = recipe.get("method") if isinstance(recipe.get("method"), dict) else {}
            model = METHOD_OPTIONS.get(method.get("name"))
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return []
        model, keyed = _pydantic_model(field.annotation)
    return list(model.model_fields) if model is not None else []


def format_validation_error(error: ValidationError, source: str, recipe: dict | None = None) -> str:
    """Turn pydantic's report into one message naming each bad key."""
    lines = []
    for detail in error.errors():
        location = ".".join(str(part) for part in detail["loc"] if part != "__root__")
        message = detail["msg"]
        if detail["type"] == "extra_forbidden":
            location_parts = [part for part in detail["loc"] if part != "__root__"]
            message = "unknown key" + did_you_mean(
                location_parts[-1], _known_keys(location_parts[:-1], recipe or {})
            )
        lines.append(f"{location or '(recipe)'}: {message}")
    return f"invalid recipe {source}: " + "; ".join(lines)


def build_config(recipe: dict, source: str = "(recipe)") -> RunConfig:
    """Validate a recipe dict into a :class:`RunConfig`.

    First the registries are filled: the built-in methods, the ``tailfuse.plugins`` entry
    points and the recipe's ``imports`` (see :mod:`tailfuse.plugins`).
    """
    from tailfuse.plugins import load_plugins

    load_plugins(recipe.get("imports") or [] if isinstance(recipe, dict) else [])
    try:
        return RunConfig.model_validate(recipe)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source, recipe)) from None


def load_recipe(
    name_or_path: str | Path, overrides: list[str] | None = None, reach_earlier_stages: bool = False
) -> RunConfig:
    """Load, merge, override and validate a recipe. The one entry point for recipes.

    ``reach_earlier_stages``: the overrides also reach the stage-1 runs this recipe trains
    (:func:`pass_overrides_to_earlier_stages`; what ``tailfuse train`` does).
    """
    overrides = list(overrides or [])
    recipe = apply_overrides(read_recipe_dict(name_or_path), overrides)
    if reach_earlier_stages:
        recipe = pass_overrides_to_earlier_stages(recipe, overrides)
    return build_config(recipe, str(name_or_path))


def config_to_dict(config: RunConfig) -> dict:
    """The resolved recipe as plain data (what ``config.yaml`` holds)."""
    return config.model_dump(mode="json")
