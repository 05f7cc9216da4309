"""cutover: a migration gateway (the package root and composition root)."""

from cutover.core import build as _build

# Before any hot module is imported: `CUTOVER_NO_EXTENSIONS=1` picks their pure-Python sources
# over the compiled ones (`cutover.core.build`).
_build.install()
