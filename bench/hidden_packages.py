"""Run a Python script as if some installed packages were not there: a bare GPU machine, simulated here.

Usage: python bench/hidden_packages.py gradio,ray,bitsandbytes bench/gpu_check.py --allow-cpu --random-weights

A lent GPU machine has torch, transformers, peft, accelerate, pandas and pyarrow, but no gradio, ray or
bitsandbytes. To check here what a script reaches there, every finder on ``sys.meta_path`` is wrapped so
that, for a hidden top-level package, it finds neither the module (``import`` raises ModuleNotFoundError and
``importlib.util.find_spec`` returns None) nor its installed distribution (``importlib.metadata.version``
raises PackageNotFoundError). Those are the two ways a package's presence is asked: a plain import, and
availability checks such as transformers' ``is_bitsandbytes_available`` (find_spec, then the version).
"""

import importlib.metadata
import runpy
import sys


def _normalised(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


class _Hiding:
    """A meta-path finder as it would be on a machine without ``hidden``; everything else is passed on."""

    def __init__(self, inner, hidden: frozenset[str]):
        self._inner, self._hidden = inner, hidden

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self._hidden or not hasattr(self._inner, "find_spec"):
            return None
        return self._inner.find_spec(name, path, target)

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        finder = getattr(self._inner, "find_distributions", None)
        if finder is None:
            return iter(())
        return (d for d in finder(context) if _normalised(d.metadata["Name"] or "") not in self._hidden)

    def invalidate_caches(self):
        if hasattr(self._inner, "invalidate_caches"):
            self._inner.invalidate_caches()


def hide(names) -> frozenset[str]:
    """Hide the top-level packages ``names`` from this process's imports and package metadata, from now on."""
    hidden = frozenset(_normalised(n.strip()) for n in names if n.strip())
    already = sorted(m for m in sys.modules if m.partition(".")[0] in hidden)
    if already:
        raise SystemExit(f"hidden_packages: {', '.join(already)} already imported; hide them before any import")
    sys.meta_path[:] = [_Hiding(finder, hidden) for finder in sys.meta_path]
    return hidden


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__.strip().splitlines()[2])
    hide(argv[0].split(","))
    sys.argv = argv[1:]
    runpy.run_path(argv[1], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
