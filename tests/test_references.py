"""References to docs/method.md resolve, and its sections are numbered in order.

The code, the tests and the documents cite the method by section of the repository's own docs/method.md, as
``method.md §3.6``. Every ``§N`` or ``§N.M`` in the text files under bavos/, tests/, benchmarks/, docs/ and in
README.md and CHANGELOG.md must name a numbered heading of docs/method.md (``## 3. Inference``,
``### 3.6 Hierarchical clustering``, ``#### 6.4.1 The rule``). Older forms that point outside the repository are
errors: the outside spec's name, "decision 7.x", and the release-bug labels B1..B17 anywhere but docs/method.md,
which defines them (ruff codes such as B018 have three digits and are not labels).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
SCANNED_DIRS = ("bavos", "tests", "benchmarks", "docs")
SCANNED_FILES = ("README.md", "CHANGELOG.md")
SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".json", ".yaml", ".yml", ".rst", ".sh"}

SECTION_REF = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^(#{2,6})\s+(\d+(?:\.\d+)*)\.?\s+\S")
ANY_HEADING = re.compile(r"^#{2,6}\s")
OUTSIDE_SPEC = re.compile(r"METHOD\.md")  # case-sensitive: the outside file's name, not docs/method.md
DECISION = re.compile(r"\b[Dd]ecisions? 7\.\d")
BUG_LABEL = re.compile(r"\bB\d{1,2}\b")


def scanned_files() -> list[Path]:
    """The text files whose references are checked, this file excepted."""
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for top in SCANNED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if any(p.startswith(".") or p == "__pycache__" for p in parts):
                continue
            if path.is_file() and path.suffix in SUFFIXES and path.resolve() != Path(__file__).resolve():
                files.append(path)
    return files


def lines_of(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return []


def method_headings() -> list[tuple[int, int, tuple[int, ...]]]:
    """(line, heading level, section number) of every heading of level 2 or deeper of docs/method.md, outside code
    fences; an unnumbered heading has the number ()."""
    found: list[tuple[int, int, tuple[int, ...]]] = []
    fenced = False
    for i, line in enumerate(lines_of(METHOD), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if fenced or not ANY_HEADING.match(line):
            continue
        m = HEADING.match(line)
        level = len(line) - len(line.lstrip("#"))
        found.append((i, level, tuple(int(x) for x in m.group(2).split(".")) if m else ()))
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{line}"


def test_references_resolve_to_method_sections() -> None:
    numbers = {".".join(map(str, n)) for _, _, n in method_headings() if n}
    assert numbers, "docs/method.md has no numbered heading"
    problems: list[str] = []
    for path in scanned_files():
        defines_labels = path.resolve() == METHOD.resolve()
        for i, line in enumerate(lines_of(path), 1):
            for m in SECTION_REF.finditer(line):
                if m.group(1) not in numbers:
                    problems.append(f"{where(path, i)}: §{m.group(1)} is no section of docs/method.md")
            for rx, what in ((OUTSIDE_SPEC, "the outside spec"), (DECISION, "a decision of the outside spec")):
                for m in rx.finditer(line):
                    problems.append(f"{where(path, i)}: {m.group(0)!r} cites {what}; cite docs/method.md §N.M")
            if not defines_labels:
                for m in BUG_LABEL.finditer(line):
                    problems.append(f"{where(path, i)}: bare label {m.group(0)}; cite docs/method.md §N.M")
    assert not problems, "unresolved references:\n" + "\n".join(problems)


def test_method_sections_numbered_in_order() -> None:
    headings = method_headings()
    assert any(n for _, _, n in headings), "docs/method.md has no numbered heading"
    problems: list[str] = []
    seen: set[tuple[int, ...]] = set()
    last: tuple[int, ...] = ()
    for line, level, number in headings:
        if not number:
            problems.append(f"docs/method.md:{line}: a heading without a section number")
            continue
        label = ".".join(map(str, number))
        if number in seen:
            problems.append(f"docs/method.md:{line}: §{label} repeats an earlier section")
        seen.add(number)
        if level != len(number) + 1:
            problems.append(f"docs/method.md:{line}: §{label} is a level-{len(number)} number under {'#' * level}")
        # The next number either goes one level down from the last (…, 1), or adds 1 at some level of it.
        parent = number[:-1]
        if parent == last:
            expected = parent + (1,)
        elif len(number) <= len(last) and last[: len(parent)] == parent:
            expected = parent + (last[len(parent)] + 1,)
        else:
            expected = None
        if number != expected:
            problems.append(f"docs/method.md:{line}: §{label} out of order after §{'.'.join(map(str, last)) or '-'}")
        last = number
    assert not problems, "\n".join(problems)
