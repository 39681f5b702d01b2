"""``tailfuse compare``: several recipes (rows) over several seeds, one table.

Every run lives in ``OUT/runs/<name>-<hash>``, the hash taken over its resolved recipe
less the keys that do not change a result (:data:`IDENTITY_IGNORED`: progress, threads,
device, workers, cache, ...). The data location is part of it, as the resolved absolute
path (:data:`IDENTITY_PATHS`: ``data.root``, the list/annotation files and the pretrained
``model.weights``; symlinks followed, relative paths taken from the current folder): the
same recipe on two copies of a dataset (``cifar10-jpeg`` and ``cifar10-lossless``) gets
two runs, two spellings of one folder get one, and data moved elsewhere is trained again
rather than silently matched to results of other data. Identical runs are trained once:
the stage-1 model of every stage-2 row of a seed, and a stage-1 row that is itself some
row's stage 1 (CE + mixup under DR, cRT, ...).
A finished run (its ``results.json``) is reused, a stopped one resumed, so calling
compare again completes the table. Runs start in row order, each once the earlier stages it
starts from (stage 1, auxiliary models) are finished: a stage-2 row whose stage 1 is done
does not wait for the other rows. ``jobs`` > 1 runs them as that many processes, the CPU
threads divided between them. The table, CSV, JSON and plot are written by
:mod:`tailfuse.eval.compare_report`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tailfuse.config import RunConfig, build_config, config_to_dict, load_recipe
from tailfuse.engine.rundir import training_process
from tailfuse.engine.runtime import resolve_device, resolve_precision
from tailfuse.engine.stages import stage1_config
from tailfuse.engine.trainer import RESUMABLE_CHANGES, _flatten
from tailfuse.errors import ConfigError
from tailfuse.eval.compare_report import read_published, write_compare_report
from tailfuse.files import read_json, read_yaml, write_text_atomically


@dataclass
class Row:
    """One table row: a label, a recipe and its overrides."""

    label: str
    recipe: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class PlannedRun:
    """One training run: its resolved recipe, where it lives, and the row it fills (``label``;
    empty for an earlier stage that is no row)."""

    config: RunConfig
    run_dir: Path
    label: str = ""

    @property
    def finished(self) -> bool:
        return (self.run_dir / "results.json").is_file()


def parse_row(text: str) -> Row:
    """``LABEL=RECIPE`` or ``RECIPE`` (label: the recipe's name), overrides after
    ``:`` separated by spaces.

    Example: ``"CE + CMO=cifar10_lt_quick_cmo"`` or ``"cifar10_lt_quick_dr:method.h2t.ratio=0.5"``.
    """
    head, _, tail = text.partition(":")
    label, _, recipe = head.rpartition("=")
    recipe = recipe.strip()
    return Row(label=label.strip() or Path(recipe).stem, recipe=recipe, overrides=shlex.split(tail))


def read_rows(path: str | Path) -> list[Row]:
    """Rows from a YAML list of ``{label, recipe, overrides}`` mappings."""
    content = read_yaml(path, "rows file")
    if not isinstance(content, list) or not all(
        isinstance(item, dict) and "recipe" in item for item in content
    ):
        raise ConfigError(
            f"rows file {path} must be a YAML list of mappings with a 'recipe' "
            "(and 'label', 'overrides')"
        )
    return [
        Row(
            str(item.get("label") or Path(item["recipe"]).stem),
            str(item["recipe"]),
            list(item.get("overrides") or []),
        )
        for item in content
    ]


#: Data and pretrained-weights paths hashed as resolved absolute paths (relative ones from the
#: current folder, as the trainer reads them).
IDENTITY_PATHS = (
    "data.root",
    "data.annotation",
    "data.annotation_cbl",
    "data.train_list",
    "data.test_list",
    "model.weights",
)
#: Keys that do not change a run's result, left out of its identity: what a resume may change,
#: except the data location (a resumed run may find its data moved; another dataset is another run).
IDENTITY_IGNORED = frozenset(RESUMABLE_CHANGES) - set(IDENTITY_PATHS)
#: Config keys added after runs were first identified, with the value that does what tailfuse
#: did before the key existed: at that value a key is left out of the identity, so a new option
#: does not rename (and train again) every finished run. Only a key whose value at this entry
#: changes nothing for the runs made before it may be listed.
IDENTITY_LATER_KEYS: dict[str, object] = {
    "model.reslt_eval_weight_power": 0.7,
    "method.loss_options.class_weight_divisor": "weight_sum",
}


def run_identity(config: RunConfig, placed: dict[str, str] | None = None) -> str:
    """``<name>-<12 hex>``: the run's name and a hash of everything that changes its result.

    The data and weights paths enter resolved (:data:`IDENTITY_PATHS`), so one dataset has one
    identity however it is spelt and two datasets never share one. ``train.precision: auto``
    enters as what it resolves to on this machine, so a bf16 run is never reused as an fp32
    one. The earlier stages' overrides (``init.overrides``, which carry ``--set``) leave out
    what changes nothing there. ``placed``: for each earlier stage that compare placed
    (``{"": identity, "auxiliary.ce.": identity}``), that stage enters as its own identity
    instead of its overrides and folder, so however its overrides are spelt and wherever the
    runs folder is, one stage 1 gives one stage-2 identity.
    """
    flat = _flatten(config_to_dict(config))
    flat = {
        key: value
        for key, value in flat.items()
        if key not in IDENTITY_IGNORED
        and not (key in IDENTITY_LATER_KEYS and value == IDENTITY_LATER_KEYS[key])
    }
    for prefix, identity in (placed or {}).items():
        flat.pop(f"init.{prefix}overrides", None)
        flat[f"init.{prefix}run_dir"] = identity
        flat[f"init.{prefix}placed"] = True  # never equal to a run_dir a recipe names
    if flat.get("train.precision") == "auto":
        device = resolve_device(config.train.device)
        flat["train.precision"] = resolve_precision("auto", device)
    for key, value in flat.items():
        if key in IDENTITY_PATHS and value:  # "" (GLT keys are absolute) and None stay as they are
            flat[key] = _resolved_path(value)
        elif key.startswith("init.") and key.endswith("overrides") and value:
            flat[key] = [item for item in map(_identity_override, value) if item is not None]
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{config.name}-{digest}"


def _resolved_path(value: str) -> str:
    return os.path.realpath(os.path.expanduser(value))


def _identity_override(text: str) -> str | None:
    """``KEY=VALUE`` of an earlier stage as the identity sees it: None when it changes nothing.

    Ignored keys change no result, and ``data.*`` none at all: an earlier stage runs on the
    later one's data (:func:`~tailfuse.engine.stages.stage1_config`), hashed with the latter.
    A later-added key at its neutral value (:data:`IDENTITY_LATER_KEYS`) changes nothing either,
    as it does in the run's own config.
    """
    key, _, value = (part.strip() for part in text.partition("="))
    if key in IDENTITY_IGNORED or key.startswith("data."):
        return None
    if key in IDENTITY_LATER_KEYS and _parsed_value(value) == IDENTITY_LATER_KEYS[key]:
        return None
    return text


def _parsed_value(text: str) -> object:
    """An override's value as the config reads it (YAML), or the text where it is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _with_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    from tailfuse.config import apply_overrides

    return build_config(apply_overrides(config_to_dict(config), overrides), config.name)


def plan_runs(
    rows: list[Row], seeds: list[int], out_dir: Path, overrides: list[str]
) -> tuple[list[PlannedRun], dict]:
    """Every run the table needs, once each, in row then seed order, each (row, seed) run
    after the earlier stages it starts from.

    ``overrides`` apply to every run, earlier stages included (e.g. ``train.epochs=2``).

    Returns the ordered runs and ``{(label, seed): PlannedRun}`` of the table cells.
    """
    if not rows:
        raise ConfigError("compare needs at least one row (a recipe)")
    runs_dir = out_dir / "runs"
    earlier: dict[Path, PlannedRun] = {}
    cells: dict[tuple[str, int], PlannedRun] = {}
    labels = [row.label for row in rows]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"row labels must differ: {labels}")
    ordered: dict[Path, PlannedRun] = {}
    for row in rows:
        for seed in seeds:
            config = load_recipe(row.recipe, [*overrides, *row.overrides, f"train.seed={seed}"])
            placed = {}
            if config.init is not None:
                config, placed = _place_earlier_stages(config, seed, runs_dir, earlier, overrides)
            cell = PlannedRun(config, _run_dir(runs_dir, config, placed), row.label)
            for run_dir in earlier_run_dirs(cell):
                if run_dir in earlier:
                    ordered.setdefault(run_dir, earlier[run_dir])
            ordered.setdefault(cell.run_dir, cell)
            cells[(row.label, seed)] = cell
    return list(ordered.values()), cells


def earlier_run_dirs(run: PlannedRun) -> list[Path]:
    """The run folders of the earlier stages ``run`` starts from: stage 1, then the auxiliary
    models (none for a one-stage run, nor for a stage given as a checkpoint file)."""
    if run.config.init is None:
        return []
    sources = [run.config.init, *run.config.init.auxiliary.values()]
    return [Path(source.run_dir) for source in sources if source.run_dir]


def startable(waiting: list[PlannedRun], unfinished: set[Path]) -> list[PlannedRun]:
    """The ``waiting`` runs, in their order, none of whose earlier stages is ``unfinished``."""
    return [run for run in waiting if not unfinished.intersection(earlier_run_dirs(run))]


def _run_dir(runs_dir: Path, config: RunConfig, placed: dict[str, str]) -> Path:
    """The run's folder: ``runs_dir/<identity>``, or the folder an earlier tailfuse named it
    by (its identity then hashed the earlier stages' overrides as written and their folder's
    path) when only that one exists, so runs made before are reused, not trained again."""
    run_dir = runs_dir / run_identity(config, placed)
    if placed and not run_dir.exists():
        earlier_name = runs_dir / run_identity(config)
        if earlier_name.exists():
            return earlier_name
    return run_dir


def _place_earlier_stages(
    config: RunConfig,
    seed: int,
    runs_dir: Path,
    earlier: dict[Path, PlannedRun],
    overrides: list[str],
) -> tuple[RunConfig, dict[str, str]]:
    """Give each earlier stage of ``config`` the global ``overrides``, this seed and a
    content-addressed run directory; also return ``{prefix: identity}`` of those stages."""
    placements, placed = [], {}
    sources = {
        "": config.init,
        **{f"auxiliary.{name}.": source for name, source in config.init.auxiliary.items()},
    }
    for prefix, source in sources.items():
        if source.checkpoint or source.run_dir:
            continue  # the recipe names its earlier stage: use it as it is
        seeded = source.model_copy(
            update={"overrides": [*source.overrides, *overrides, f"train.seed={seed}"]}
        )
        first = stage1_config(config, seeded)
        placed[prefix] = run_identity(first)
        run_dir = runs_dir / placed[prefix]
        earlier.setdefault(run_dir, PlannedRun(first, run_dir))
        quoted = json.dumps(seeded.overrides)
        placements += [f"init.{prefix}overrides={quoted}", f"init.{prefix}run_dir={run_dir}"]
    return (_with_overrides(config, placements) if placements else config), placed


class PrefixedLines(io.TextIOBase):
    """A text stream that writes each complete line to ``target`` after ``prefix``, so the
    lines of runs trained side by side say which run they belong to."""

    def __init__(self, target, prefix: str):
        self.target, self.prefix, self.pending = target, prefix, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.target.write(f"{self.prefix}{line}\n")
        if lines:
            self.target.flush()
        return len(text)

    def close_line(self) -> None:
        """Write what is left of an unterminated last line."""
        if self.pending:
            self.target.write(f"{self.prefix}{self.pending}\n")
            self.pending = ""
        self.target.flush()


def _train_one(
    config_dict: dict, run_dir: str, threads: int | None, label: str | None = None
) -> dict:
    """Train (or resume) one run with ``threads`` CPU threads; a process-pool
    worker when ``jobs`` > 1, whose printed lines then start with ``[label]``."""
    from tailfuse.engine.trainer import train

    if threads:
        config_dict = {**config_dict, "train": {**config_dict["train"], "threads": threads}}
    config = build_config(config_dict, run_dir)
    resume = (Path(run_dir) / "checkpoints" / "last.pt").exists()
    if label is None:
        return train(config, run_dir, resume=resume)
    out, err = PrefixedLines(sys.stdout, f"[{label}] "), PrefixedLines(sys.stderr, f"[{label}] ")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return train(config, run_dir, resume=resume)
    finally:
        out.close_line()
        err.close_line()


def execute(
    runs: list[PlannedRun],
    jobs: int,
    threads_per_job: int | None,
    on_finished: Callable[[PlannedRun], None] | None = None,
) -> None:
    """Train every unfinished run of ``runs`` (in order, earlier stages before the runs
    that start from them), ``jobs`` at a time, each once its earlier stages are finished;
    ``on_finished(run)`` right after each run finishes, before the queue goes on."""
    waiting = [run for run in runs if not run.finished]
    if jobs <= 1:
        for run in waiting:
            print(f"training {run.run_dir.name}")
            _train_one(config_to_dict(run.config), str(run.run_dir), threads_per_job)
            if on_finished is not None:
                on_finished(run)
        return
    unfinished = {run.run_dir for run in waiting}
    running: dict[Future, PlannedRun] = {}
    failed: Future | None = None  # the first run that failed: no new run starts after it
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        while (waiting and failed is None) or running:
            startable_now = startable(waiting, unfinished) if failed is None else []
            for run in startable_now[: jobs - len(running)]:
                waiting.remove(run)
                label = _label(run)
                print(f"[{label}] training in {run.run_dir}", flush=True)
                arguments = (config_to_dict(_quiet(run.config)), str(run.run_dir))
                running[pool.submit(_train_one, *arguments, threads_per_job, label)] = run
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                if future.exception() is not None:
                    if running:  # the error surfaces once the others finish: say so now
                        print(
                            f"[{_label(run)}] failed: {future.exception()}; no new run starts, "
                            f"the {len(running)} still running finish first",
                            file=sys.stderr,
                            flush=True,
                        )
                    failed = failed or future
                    continue
                unfinished.discard(run.run_dir)
                print(f"[{_label(run)}] finished", flush=True)
                if on_finished is not None:
                    on_finished(run)
    if failed is not None:
        failed.result()  # re-raises the worker's error (a TailfuseError stays one)


def _label(run: PlannedRun) -> str:
    """How the lines of a run trained beside others name it: its row (else its recipe) and
    seed, so two rows of one recipe with other overrides stay apart."""
    return f"{run.label or run.config.name} seed {run.config.train.seed}"


def _quiet(config: RunConfig) -> RunConfig:
    """Parallel runs print no progress bars (they would interleave)."""
    return config.model_copy(update={"train": config.train.model_copy(update={"progress": False})})


def _progress(run: PlannedRun) -> str:
    """``finished``; ``training now, epoch K of N done`` while a live process holds the run;
    ``stopped after epoch K of N`` (with a checkpoint to resume from); else ``not started``.
    K is the last logged training epoch; when the epochs logged their seconds, the time the
    rest would take at the median pace of the last five follows."""
    if run.finished:
        return "finished"
    training = training_process(run.run_dir) is not None
    seconds_by_epoch = {}
    log = run.run_dir / "metrics.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "train_loss" in record:
            seconds_by_epoch[int(record.get("epoch", 0))] = record.get("seconds")
    resumable = (run.run_dir / "checkpoints" / "last.pt").is_file() and seconds_by_epoch
    if not training and not resumable:
        return "not started"
    last, total = max(seconds_by_epoch, default=0), run.config.train.epochs
    if training:
        state = f"training now, epoch {last} of {total} done"
    else:
        state = f"stopped after epoch {last} of {total}"
    recent = [seconds_by_epoch[epoch] for epoch in sorted(seconds_by_epoch)[-5:]]
    if recent and last < total and all(isinstance(value, int | float) for value in recent):
        hours = (total - last) * statistics.median(recent) / 3600
        state += f", about {hours:.1f} h more at its last epochs' pace"
    return state


def plan_text(rows: list[Row], seeds: list[int], out_dir: str | Path, overrides: list[str]) -> str:
    """What ``compare`` would do, without doing it: every run in the order it starts them,
    its folder, what it is (table cells, stage 1 of which runs), how far it got, and the
    earlier stage an unfinished one waits for."""
    runs, cells = plan_runs(rows, seeds, Path(out_dir), list(overrides))
    shown_as = {run.run_dir: [] for run in runs}  # the table cells a run fills
    later_rows = {run.run_dir: [] for run in runs}  # the rows that start from it
    for (label, seed), run in cells.items():
        shown_as[run.run_dir].append(f"{label} seed {seed}")
        for earlier in earlier_run_dirs(run):
            if earlier in later_rows:
                later_rows[earlier].append(label)
    unfinished = {run.run_dir for run in runs if not run.finished}
    states = [_progress(run) for run in runs]
    lines = [
        f"{len(runs)} runs in {Path(out_dir) / 'runs'}: {states.count('finished')} finished, "
        f"{sum(state.startswith('training') for state in states)} training now, "
        f"{sum(state.startswith('stopped') for state in states)} stopped (compare resumes "
        f"them), {states.count('not started')} not started; in the order compare starts them, "
        "each once the earlier stages it starts from are finished:"
    ]
    width = max(len(state) for state in states)
    for run, state in zip(runs, states, strict=True):
        roles = shown_as[run.run_dir] or [_label(run)]
        if later_rows[run.run_dir]:
            roles.append(f"stage 1 of {', '.join(later_rows[run.run_dir])}")
        waits = [path.name for path in earlier_run_dirs(run) if path in unfinished]
        if waits and not run.finished:
            roles.append(f"after {', '.join(waits)}")
        lines.append(f"  {state:<{width}}  {run.run_dir.name}  ({'; '.join(roles)})")
    return "\n".join(lines)


def run_compare(
    rows: list[Row],
    seeds: list[int],
    out_dir: str | Path,
    overrides: list[str] | None = None,
    published: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
    command: str = "",
    report_only: bool = False,
    summaries: str | Path | None = None,
) -> list[dict]:
    """Run what is missing and write ``compare.{md,csv,json,png}``; returns
    the table's summary rows.

    ``threads``: CPU threads in all; each of the ``jobs`` processes gets ``threads // jobs``
    (default: the machine's cores divided by ``jobs``). ``report_only``: train nothing; the
    table holds the rows whose runs have all finished and names the others. ``summaries``: a
    folder that receives the table's files and every finished run's summary
    (:func:`copy_run_summary`): each run as soon as it finishes, the table at the end.
    """
    if jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if summaries is not None and Path(summaries).exists() and not Path(summaries).is_dir():
        raise ConfigError(f"--summaries {summaries}: exists and is not a folder")
    out_dir = Path(out_dir)
    paper = read_published(published) if published else {}
    runs, cells = plan_runs(rows, seeds, out_dir, list(overrides or []))
    file_summary = None
    if summaries is not None:

        def file_summary(run: PlannedRun) -> None:
            copy_run_summary(run.run_dir, Path(summaries))

        for run in runs:  # what finished before this call, then each run as it finishes
            if run.finished:
                file_summary(run)
    total_threads = threads or os.cpu_count() or 1
    threads_per_job = max(1, total_threads // jobs) if (jobs > 1 or threads) else None
    unfinished_rows = []
    if report_only:
        unfinished_rows = [
            row.label
            for row in rows
            if not all(cells[(row.label, seed)].finished for seed in seeds)
        ]
        rows = [row for row in rows if row.label not in unfinished_rows]
        if unfinished_rows:
            print(f"not finished yet, left out of the table: {', '.join(unfinished_rows)}")
        if not rows:
            raise ConfigError(
                f"--report-only: no row has finished all its runs in {out_dir / 'runs'} yet "
                "(`--plan` shows how far they got)"
            )
    else:
        execute(runs, jobs, threads_per_job, file_summary)
    cells = {
        (label, seed): run for (label, seed), run in cells.items() if label not in unfinished_rows
    }
    results = {key: _finished_results(run.run_dir) for key, run in cells.items()}
    runs_by_cell = {key: run.run_dir for key, run in cells.items()}
    summary = write_compare_report(
        out_dir, rows, seeds, results, runs_by_cell, paper, command, unfinished_rows
    )
    if summaries is not None:
        tables = [out_dir / name for name in TABLE_FILES if (out_dir / name).is_file()]
        _copy_files(tables, Path(summaries))
    return summary


#: The table files compare writes into its ``--out`` folder.
TABLE_FILES = ("compare.md", "compare.csv", "compare.json", "compare.png")


def copy_run_summary(run_dir: Path, destination: Path) -> Path:
    """Copy a run's summary into ``destination/runs/NAME/`` and return that folder.

    The summary is the plain files at the top of the run's folder (config, data summary,
    metrics, report, results, starts, plots), never its ``checkpoints/`` nor a temporary
    sibling: what a results folder under version control keeps. Each file is written
    atomically, so an interrupted copy leaves every earlier copy whole.
    """
    folder = destination / "runs" / run_dir.name
    files = [
        path
        for path in sorted(run_dir.iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]
    _copy_files(files, folder)
    return folder


def _copy_files(files: list[Path], folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--summaries: cannot create {folder}: {error.strerror}") from None
    for path in files:
        write_text_atomically(folder / path.name, path.read_bytes())


def _finished_results(run_dir: Path) -> dict:
    """A finished run's ``results.json``, or one line saying it is damaged and what to do."""
    results = read_json(run_dir / "results.json", "the results of the finished run")
    if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
        raise ConfigError(
            f"{run_dir / 'results.json'} holds no test results; remove {run_dir} "
            "to train that run again"
        )
    return results
