"""The docs site's results pages, generated from `benchmarks/results/*.json`, so that no figure is
copied by hand: one page per results file, with the benchmark script's own description, the
commit and machine the file records, and every figure in it as a table.

    python scripts/results_pages.py    # writes docs/results/ (mkdocs runs it as a hook on every build)
"""
from __future__ import annotations

import ast
import json
import math
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS, BENCHMARKS, OUT = ROOT / "benchmarks" / "results", ROOT / "benchmarks", ROOT / "docs" / "results"
MAX_ROWS = 400  # a longer list of rows is cut, with a note saying how many there are in the file


def cell(value) -> str:
    """A value as a table cell: floats to 4 significant digits, `|` escaped."""
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
    elif isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        text = ", ".join(cell(v) for v in value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(", ", ": "))
        text = text if len(text) <= 120 else text[:117] + "..."
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"\n*The first {MAX_ROWS} of {len(rows)} rows; the file holds them all.*")
    return lines


def render(data: dict, depth: int = 2) -> list[str]:
    """Scalars as a two-column table, lists of records as tables, mappings of mappings as sections,
    and a benchmark's own `markdown` verbatim."""
    lines, scalars = [], {}
    for key, value in data.items():
        if key in ("commit", "machine", "markdown"):
            continue
        records = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        nested = isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values())
        if records:
            lines += ["", f"{'#' * depth} {key}", "", *table(value)]
        elif nested and depth < 4:
            lines += ["", f"{'#' * depth} {key}", *render(value, depth + 1)]
        else:
            scalars[key] = value
    head = ["", "| figure | value |", "|---|---|", *[f"| {k} | {cell(v)} |" for k, v in scalars.items()]] \
        if scalars else []
    markdown = ["", data["markdown"]] if isinstance(data.get("markdown"), str) else []
    return head + markdown + lines


def script_for(name: str) -> Path | None:
    """The benchmark that writes `<name>.json`: benchmarks/<name>.py, else the longest prefix of it."""
    parts = name.split("_")
    for end in range(len(parts), 0, -1):
        path = BENCHMARKS / ("_".join(parts[:end]) + ".py")
        if path.is_file():
            return path
    return None


def machine(data: dict) -> str:
    where = data.get("machine") or data.get("device")
    if isinstance(where, dict):
        return ", ".join(f"{k} {v}" for k, v in where.items())
    return str(where) if where else "not recorded in the file"


def page(path: Path) -> str:
    data = json.loads(path.read_text())
    script = script_for(path.stem)
    lines = [f"# {path.stem.replace('_', ' ')}", ""]
    if script is not None:
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        lines += [f"Written by `benchmarks/{script.name}`:", "", *[f"> {line}".rstrip() for line in doc.splitlines()],
                  ""]
    lines += [f"- results file: `benchmarks/results/{path.name}`",
              f"- commit: `{data.get('commit') or 'not recorded in the file'}`",
              f"- machine: {machine(data)}"]
    return "\n".join(lines + render(data)) + "\n"


def write_pages(out: Path = OUT) -> list[Path]:
    """Write a page per results file and an index into `out` (only what changed: `mkdocs serve`
    watches it); returns the results files."""
    files = sorted(RESULTS.glob("*.json"))
    pages = {out / "index.md"} | {out / f"{path.stem}.md" for path in files}
    if out.is_dir():
        for stale in set(out.iterdir()) - pages:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    index = ["# Results", "",
             "Every figure here is read from `benchmarks/results/` when the site is built; each page names",
             "the benchmark that wrote it, the commit and the machine it ran on.", "",
             "| results | commit | machine |", "|---|---|---|"]
    for path in files:
        data = json.loads(path.read_text())
        _write(out / f"{path.stem}.md", page(path))
        index.append(f"| [{path.stem}]({path.stem}.md) | {cell(data.get('commit'))} | {cell(machine(data))} |")
    _write(out / "index.md", "\n".join(index) + "\n")
    return files


def _write(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def on_config(config):
    """mkdocs hook: the pages made fresh on every build, each listed under the nav's Results."""
    files = write_pages()
    section = ["results/index.md", *(f"results/{path.stem}.md" for path in files)]
    config["nav"] = [{"Results": section} if isinstance(entry, dict) and "Results" in entry else entry
                     for entry in config["nav"] or []]
    return config


if __name__ == "__main__":
    print(f"wrote {len(write_pages())} results pages to {OUT}")
