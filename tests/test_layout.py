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
