"""The README's examples run, and its formula-language table is the one the code generates."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})  # noqa: S102


def test_language_table_matches_the_function_table():
    from ufuncgen.functions import language_table
    table = language_table()
    assert table in TEXT, "regenerate the README table with ufuncgen.functions.language_table()"
