"""The rooms of the package import only what the README's layout says they may: a component
stays usable, and testable, without the layers above it."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "genkit"
MAY_IMPORT = {  # room -> the genkit modules it may import (its own room always)
    "genkit.registry": set(),
    "genkit.arguments": {"genkit.registry"},
    "genkit.assets": set(),
    "genkit.paths": set(),
    "genkit.nets": {"genkit.registry"},
    "genkit.methods": {"genkit.paths", "genkit.registry"},
    "genkit.oracles": {"genkit.paths"},
    "genkit.samplers": {"genkit.paths", "genkit.registry", "genkit.methods.autoregressive", "genkit.nets",
                        "genkit.oracles"},
}


def genkit_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genkit"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("genkit")}
    return found


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_rooms_import_only_what_they_may(room):
    base = PACKAGE.parent / room.replace(".", "/")
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert files
    allowed = MAY_IMPORT[room] | {room}
    for path in files:
        for module in genkit_imports(path):
            assert any(module == a or module.startswith(a + ".") for a in allowed), \
                f"{path.relative_to(PACKAGE.parent)} imports {module}"


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package by its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def test_no_import_cycles():
    """The module graph (each import, and the packages Python runs on the way to it, below the root
    package) has no cycle: every module can be imported first."""
    known = modules()
    edges = {}
    for name, path in known.items():
        targets = set()
        for module in genkit_imports(path):
            for node in ast.walk(ast.parse(path.read_text())):  # `from genkit.x import y`, y a module
                if isinstance(node, ast.ImportFrom) and node.module == module:
                    targets |= {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known}
            parts = module.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}  # its packages, then itself
        edges[name] = {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, [" -> ".join(c) for c in cycles[:5]]


# genkit modules imported where they are used, each for its reason
DEFERRED = {"genkit.export.diffusers_pipeline": "its classes subclass diffusers', and importing diffusers takes "
                                                "seconds that `import genkit` and every command would pay"}


def test_no_genkit_import_inside_a_function():
    """genkit's own modules are imported at the top of each file (optional dependencies, which are not
    genkit's, may be imported where they are used), but for those in `DEFERRED`."""
    inside = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n.startswith("genkit") and n not in DEFERRED for n in names) and id(node) not in top:
                inside.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not inside, inside


# Names a module outside samplers/ may hold as text, each for a reason other than naming a sampler.
NOT_A_SAMPLER = {
    "genkit/methods/consistency.py": {"euler", "heun"},  # the distillation's own teacher step (`teacher_solver`)
}


def test_only_the_samplers_name_a_sampler():
    """No module outside genkit/samplers/ holds a sampler's name as text (a name that is also a
    method's, such as ddpm, names the method there); the default sampler is `DEFAULT_SAMPLER`."""
    from genkit.methods import METHODS
    from genkit.samplers import SAMPLERS

    names = set(SAMPLERS) - set(METHODS)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        if rel.startswith("genkit/samplers/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names - NOT_A_SAMPLER.get(rel, set()):
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found


def test_the_trainer_names_no_method():
    """The training loop reaches method-specific behaviour through the method and its registry
    entry's hooks, never by a method's name (as text or as a config section)."""
    from genkit.methods import METHODS

    training = PACKAGE / "training"
    files = sorted(training.rglob("*.py")) if training.is_dir() else [PACKAGE / "training.py"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else node.attr if isinstance(node, ast.Attribute) else None
            if isinstance(text, str) and text in METHODS:
                found.append(f"{path.name}:{node.lineno} {text!r}")
    assert not found, found
