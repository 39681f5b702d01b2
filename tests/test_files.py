"""The shared file readers: content, or one line naming the file, what it is and why; and the
project's line limit on every tracked source, recipe and configuration file."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tailfuse.errors import ConfigError
from tailfuse.files import read_json, read_yaml


def test_read_yaml_and_json_return_the_content(tmp_path):
    (tmp_path / "a.yaml").write_text("rows:\n  - {label: CE, recipe: ce}\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "a.json").write_text('{"test": {"top1": 61.5}, "seeds": [0, 1]}')
    assert read_yaml(tmp_path / "a.yaml", "rows file") == {
        "rows": [{"label": "CE", "recipe": "ce"}]
    }
    assert read_yaml(tmp_path / "empty.yaml", "rows file") is None
    assert read_json(tmp_path / "a.json", "results") == {"test": {"top1": 61.5}, "seeds": [0, 1]}


@pytest.mark.parametrize(
    "reader, name, content, reason",
    [
        (read_yaml, "bad.yaml", b"a: [1\n", "not valid YAML: while parsing a flow sequence"),
        (read_yaml, "latin.yaml", b"label: caf\xe9\n", "not UTF-8 text (byte 10: invalid"),
        (read_yaml, "missing.yaml", None, "No such file or directory"),
        (
            read_json,
            "half.json",
            b'{"test": {"top1": 6',
            "not valid JSON: Expecting ',' delimiter: line 1 column 20",
        ),
        (read_json, "latin.json", b'{"a": "\xe9"}', "not UTF-8 text (byte 7: invalid"),
        (read_json, "missing.json", None, "No such file or directory"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_what_it_is_and_why(
    tmp_path, reader, name, content, reason
):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        reader(path, "the thing")
    message = str(raised.value)
    assert message.startswith(f"cannot read the thing {path}: ")
    assert reason in message and "\n" not in message


REPOSITORY = Path(__file__).resolve().parents[1]
#: the project's line limit in characters (pyproject.toml: [tool.ruff] line-length)
LINE_LIMIT = 100


def test_no_tracked_source_or_recipe_line_is_longer_than_100_characters():
    """ruff checks the .py files; this holds the recipes, benchmark rows, TOML and shell scripts to
    the same limit, and the .py files ruff is not pointed at (docs/)."""
    git = shutil.which("git")
    if git is None or not (REPOSITORY / ".git").exists():  # .git is a file in a worktree
        pytest.skip("not a git checkout (e.g. an sdist): no list of tracked files")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--", "*.py", "*.yaml", "*.yml", "*.toml", "*.sh"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, f"git ls-files failed: {listed.stderr.strip()}"
    too_long = []
    for name in filter(None, listed.stdout.split("\0")):
        path = REPOSITORY / name
        if not path.is_file():  # tracked but deleted in this checkout
            continue
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                length = len(line.rstrip("\r\n"))
                if length > LINE_LIMIT:
                    too_long.append(f"{name}:{number} ({length})")
    assert not too_long, f"{len(too_long)} lines over {LINE_LIMIT} characters:\n" + "\n".join(
        too_long
    )
