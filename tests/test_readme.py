"""The README's examples run and print what the README says they print."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```(\w+)\n(.*?)```", README.read_text(), re.DOTALL)


def _run(code):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    return out.getvalue()


def test_first_example_prints_what_the_readme_shows():
    blocks = _blocks()
    i = next(k for k, (lang, _) in enumerate(blocks) if lang == "python")
    assert blocks[i + 1][0] == "text", "the first python block is followed by its output"
    assert _run(blocks[i][1]) == blocks[i + 1][1]


def test_every_python_block_runs_and_its_comments_match():
    for lang, code in _blocks():
        if lang != "python":
            continue
        printed = _run(code).splitlines()
        promised = [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# (.*)$", code, re.MULTILINE)]
        for want in promised:
            assert want in printed, f"README promises {want!r}, got {printed}"
