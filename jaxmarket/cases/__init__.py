"""The case files shipped with the package, addressed by name (``new_england``).

``locate(name_or_path)`` is how every command reads a case: an existing file path is
taken as it is, otherwise the name of a packaged case (the file's stem here).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jaxmarket.errors import InputError


def names() -> list[str]:
    """The packaged cases, sorted."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".json"))


def locate(name_or_path) -> Path:
    """The file of a case: a path that exists, else a packaged case of that name."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".json" or len(path.parts) > 1:
        return path  # a missing path is reported by the reader, naming the file
    if str(name_or_path) in names():
        return Path(str(resources.files(__name__) / f"{name_or_path}.json"))
    raise InputError(str(name_or_path), f"no such file and no packaged case of that name "
                                        f"(packaged: {', '.join(names())})")
