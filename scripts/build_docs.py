#!/usr/bin/env python3
"""Build the API reference from docstrings with pdoc into docs/api/ (gitignored).

Warnings are errors: any warning pdoc (or an import it triggers) emits fails the
build with exit status 1 after listing every warning. ``make docs`` and
``.ci/run`` run this.

Usage: python scripts/build_docs.py [--output DIR] [PACKAGE ...]   (default: cryptoj)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import shutil
import sys
import typing
import warnings
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def all_modules(package: str, problems: list[str]) -> list[ModuleType]:
    """``package`` and every module below it, imported.

    Listed explicitly because pdoc only follows submodules named in a package's
    ``__all__``, and our packages' ``__all__`` lists their API, not their modules.
    """
    root = importlib.import_module(package)
    modules = [root]
    if hasattr(root, "__path__"):

        def onerror(name: str) -> None:
            problems.append(f"cannot import {name}")

        for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=onerror):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except Exception as exc:  # report every broken module, not just the first
                problems.append(f"cannot import {info.name}: {type(exc).__name__}: {exc}")
    return modules


def resolve_namedtuple_annotations(modules: list[ModuleType]) -> None:
    """Give NamedTuple constructors resolved annotations.

    With ``from __future__ import annotations`` a NamedTuple's generated ``__new__``
    carries string annotations that pdoc cannot resolve (its globals are not the
    module's), which it reports as warnings. ``typing.get_type_hints`` on the class
    resolves them in the defining module.
    """
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not (issubclass(cls, tuple) and hasattr(cls, "_fields")):
                continue
            try:
                hints = typing.get_type_hints(cls)
            except Exception:  # noqa: S112 - leave it to pdoc, which will warn about it
                continue
            cls.__new__.__annotations__ = {**hints, "return": cls}


def build(packages: list[str], output: Path) -> list[str]:
    """Render ``packages`` (and all their modules) into ``output``; return every warning emitted."""
    import pdoc.doc
    import pdoc.render

    pdoc.render.configure(
        docformat="restructuredtext",
        show_source=True,
        footer_text="CryptoJ Trader API reference",
        search=True,
    )
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = [m for package in packages for m in all_modules(package, problems)]
        resolve_namedtuple_annotations(modules)
        docs = {m.__name__: pdoc.doc.Module(m) for m in modules}
        for name, module_doc in docs.items():
            page = output / f"{name.replace('.', '/')}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(pdoc.render.html_module(module_doc, docs), encoding="utf-8")
        (output / "index.html").write_text(pdoc.render.html_index(docs), encoding="utf-8")
        (output / "search.js").write_text(pdoc.render.search_index(docs), encoding="utf-8")
    return problems + [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="*", default=["cryptoj"], help="packages to document (default: cryptoj)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "api", help="output directory (default: docs/api)")
    args = parser.parse_args(argv)
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    problems = build(args.packages, args.output)
    if problems:
        print(f"docs: {len(problems)} warning(s), treated as errors:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    pages = sum(1 for _ in args.output.rglob("*.html"))
    print(f"docs: API reference written to {args.output} ({pages} pages, no warnings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
