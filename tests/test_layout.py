"""The README's layout block names every module of every stream/ package, so a newcomer who reads it
finds every file (a module added without a word there fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> dict[str, str]:
    """Package name -> the text of its entry in the README's layout block (continuation lines included)."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("```\nstream/\n"):]
    block = block[:block.index("```", 4)]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines()[2:]:
        m = re.match(r"  (\w+)/\s", line) or re.match(r"  (\w+\.py)\s", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif line.startswith("              ") and current:
            entries[current] += " " + line
        elif not line.startswith(" "):
            current = None
    return entries


def test_the_readme_layout_names_every_module() -> None:
    entries = _layout_block()
    missing = []
    for package in sorted(p for p in (ROOT / "stream").iterdir() if (p / "__init__.py").exists()):
        text = entries.get(package.name)
        if text is None:
            missing.append(f"{package.name}/ (the whole package)")
            continue
        for module in sorted(package.glob("*.py")):
            if package.name == "cli" or module.stem == "__init__":
                continue  # cli/ is described as "one module per command group"
            if not re.search(rf"\b{module.stem}\b", text):
                missing.append(f"{package.name}/{module.name}")
    for module in sorted((ROOT / "stream").glob("*.py")):
        if module.stem != "__init__" and module.name not in entries:
            missing.append(module.name)
    assert not missing, f"README layout does not name: {', '.join(missing)}"
