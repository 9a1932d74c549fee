"""Code triggers: the files of mammoflow a job of each command can load, found without importing anything.

Snakemake re-runs a job when its rule's shell command, inputs or params change; it does not see the Python
the command runs. So each rule passes ``code=code_digest("<command>")`` as a parameter: the hash of exactly
the package files its job can load, and an edit to one of them (a comment is enough) re-runs the jobs that
load it and no others (``snakemake -n --list-changes params`` names them).

How the files are found, reading the sources with :mod:`ast`:

- A job runs ``python -m mammoflow <command>``: Python imports the ``mammoflow`` package and runs
  ``__main__.py``, which imports ``cli.py``; the command line imports the module of the command asked for
  (``mammoflow.commands.COMMANDS``) and, for a GPU command, ``mammoflow.devices``. Those two imports go
  through :mod:`importlib` by name, so they are roots here, read from the same table.
- Every ``import`` and ``from ... import`` of a mammoflow module is followed, at module level and inside
  functions (a function-level import counts whether or not its branch runs); ``from package import name``
  follows ``package.name`` when that is a module; importing ``a.b.c`` runs ``a/__init__.py`` and
  ``a/b/__init__.py`` first. Imports under ``if TYPE_CHECKING:`` never run and are not followed.
- The command's own module is read per function: its module-level code, ``register`` (the parser), the
  handler, and the module's functions these name, but not the handlers of the module's other commands
  (``gan-fid`` never runs ``gan-stage``'s training loop, though both live in gan/cli.py).
- A string in a module that names a file beside it other than Python, or a folder of such files
  (report/templates, report/paper_table2.csv), is data the module reads: those files are hashed with it.

The result is a superset of what a job loads (tests/test_code_triggers.py records each job's
``sys.modules`` and checks), as tight as the imports allow. Standard library only: the Snakemake driver
imports it.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from mammoflow.commands import COMMANDS, LEASE_MODULE

PACKAGE = "mammoflow"
ENTRY = "mammoflow.__main__"  # what `python -m mammoflow` runs


@dataclass
class Unit:
    """What a piece of a module's code imports and which of the module's functions it names."""

    imports: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    dynamic: bool = False  # imports a module whose name is computed (importlib with a variable)


@dataclass
class Module:
    name: str
    path: Path
    top: Unit  # module-level code, class bodies included: it runs when the module is imported
    functions: dict[str, Unit]  # the module's top-level functions
    data: list[Path]  # files other than Python that the module names

    def imports(self) -> set[str]:
        return set().union(self.top.imports, *(f.imports for f in self.functions.values()))

    def reachable_imports(self, roots: list[str], skip: set[str]) -> set[str]:
        """The imports of module-level code and of ``roots``, following the functions they name."""
        missing = [r for r in roots if r not in self.functions]
        if missing:
            raise ValueError(f"{self.path}: no function {', '.join(missing)}")
        seen, todo = set(), [*roots, *self.top.names]
        while todo:
            name = todo.pop()
            if name in seen or name in skip or name not in self.functions:
                continue
            seen.add(name)
            todo += self.functions[name].names
        return set().union(self.top.imports, *(self.functions[n].imports for n in seen))


def _last_name(node: ast.AST) -> str:
    """``b`` of ``a.b``, ``a`` of ``a``, else empty."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


class _Reader(ast.NodeVisitor):
    """Fills a Unit from a piece of code; ``package`` is the package relative imports start from."""

    def __init__(self, unit: Unit, package: str, known: set[str]):
        self.unit, self.package, self.known = unit, package, known

    def visit_If(self, node: ast.If) -> None:
        if _last_name(node.test) != "TYPE_CHECKING":  # typing-only imports never run
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)
        self.visit(node.test)

    def visit_Import(self, node: ast.Import) -> None:
        self.unit.imports.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        if base.split(".")[0] != PACKAGE:
            return
        self.unit.imports.add(base)
        self.unit.imports.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.known)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = (
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        )
        if called in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                if first.value.split(".")[0] == PACKAGE:
                    self.unit.imports.add(first.value)
            else:
                self.unit.dynamic = True
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.unit.names.add(node.id)


class Package:
    """The mammoflow sources under ``src``, parsed once each."""

    def __init__(self, src: str | Path):
        self.src = Path(src)
        self.root = self.src / PACKAGE
        self.known = {self._name_of(p) for p in self.root.rglob("*.py") if "__pycache__" not in p.parts}

    def _name_of(self, path: Path) -> str:
        parts = list(path.relative_to(self.src).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def path_of(self, name: str) -> Path:
        base = self.src.joinpath(*name.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    @cache  # noqa: B019 -- one Package per driver run; parsing each file once is the point
    def module(self, name: str) -> Module:
        path = self.path_of(name)
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError) as error:
            raise ValueError(f"{path}: cannot be read for the code trigger ({error})") from error
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        top, functions, strings = Unit(), {}, set()
        for statement in tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                functions[statement.name] = unit = Unit()
                _Reader(unit, package, self.known).visit(statement)
                # Decorators and default values run when the module is imported.
                for part in [
                    *statement.decorator_list,
                    *statement.args.defaults,
                    *statement.args.kw_defaults,
                ]:
                    if part is not None:
                        _Reader(top, package, self.known).visit(part)
            else:
                _Reader(top, package, self.known).visit(statement)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) < 200:
                strings.add(node.value)
        return Module(name, path, top, functions, self._data_named(path.parent, strings))

    def _data_named(self, folder: Path, strings: set[str]) -> list[Path]:
        found = []
        for text in sorted(strings):
            if "\n" in text or "\0" in text or text.startswith(("/", ".")):
                continue
            candidate = folder / text
            if candidate.is_file() and candidate.suffix != ".py":
                found.append(candidate)
            elif candidate.is_dir() and not (candidate / "__init__.py").exists():
                found += [
                    p for p in sorted(candidate.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
                ]
        return found

    def closure(self, roots: list[str], entry: tuple[str, list[str], set[str]] | None = None) -> set[str]:
        """Module names loaded by importing ``roots``, and ``entry`` = (module, functions run, functions
        never run) read per function; every package on the way included."""
        todo, seen, partial = list(roots), set(), None
        if entry is not None:
            partial, run, never = entry
            seen.add(partial)
            todo += [*self.module(partial).reachable_imports(run, never), partial.rpartition(".")[0]]
        while todo:
            name = todo.pop()
            if name == partial:  # another module imports the entry module: any of its functions may run
                partial = None
                todo += self.module(name).imports()
            if not name or name not in self.known or name in seen:
                continue
            seen.add(name)
            todo += [name.rpartition(".")[0], *self.module(name).imports()]
        return seen

    def command_modules(self, command: str) -> set[str]:
        """The modules a ``python -m mammoflow <command>`` job can load."""
        if command not in COMMANDS:
            raise ValueError(f"mammoflow has no command {command!r} (mammoflow.commands.COMMANDS)")
        spec = COMMANDS[command]
        others = {c.handler for c in COMMANDS.values() if c.module == spec.module} - {spec.handler}
        roots = [ENTRY, *([LEASE_MODULE] if spec.gpu else [])]
        return self.closure(roots, (spec.module, ["register", spec.handler], others))

    def command_files(self, command: str) -> list[Path]:
        """The files behind :meth:`command_modules`: sources and the data files they name."""
        modules = [self.module(name) for name in sorted(self.command_modules(command))]
        return sorted({m.path for m in modules} | {p for m in modules for p in m.data})

    @cache  # noqa: B019
    def digest(self, command: str) -> str:
        """16 hex digits of SHA-256 over the command's files, each with its path under src/."""
        hashed = hashlib.sha256()
        for path in self.command_files(command):
            hashed.update(path.relative_to(self.src).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        return hashed.hexdigest()[:16]
