"""Load peer libraries for the benchmarks.

k-diffusion's package ``__init__`` imports training utilities (clean-fid, CLIP, kornia ...)
that a GPU box may lack, while its ``sampling`` module needs only torch, scipy,
torchdiffeq, torchsde and tqdm (plus ``utils``: PIL, safetensors, torchvision). So if a plain
``import k_diffusion`` fails we register an empty package object pointing at the installed
(or unpacked) sources and import ``k_diffusion.sampling`` alone: the peer's real code,
unmodified.
"""

from __future__ import annotations

import glob
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import zipfile


def _find_k_diffusion_dir() -> str | None:
    spec = importlib.util.find_spec("k_diffusion")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    here = os.path.dirname(os.path.abspath(__file__))
    for whl in glob.glob(os.path.join(here, "..", ".whl", "k_diffusion-*.whl")):
        dest = os.path.join("/tmp", "k_diffusion_src")
        if not os.path.isdir(os.path.join(dest, "k_diffusion")):
            with zipfile.ZipFile(whl) as z:
                z.extractall(dest)
        return os.path.join(dest, "k_diffusion")
    return None


def load_k_diffusion_sampling():
    """Return k-diffusion's ``sampling`` module, or None if k-diffusion is not available."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception:
        for name in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
            del sys.modules[name]
    path = _find_k_diffusion_dir()
    if path is None:
        return None
    stubs = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    stubbed = importlib.util.find_spec("torchvision") is None
    if stubbed:
        # utils.py imports torchvision's image transforms at module level; sampling never
        # calls them. Stand in empty modules so the sampling code itself loads unchanged.
        for name in stubs:
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [path]
    # a real spec, so importlib.util.find_spec("k_diffusion") works later in the same process
    init = os.path.join(path, "__init__.py")
    pkg.__spec__ = importlib.machinery.ModuleSpec("k_diffusion", None, origin=init, is_package=True)
    pkg.__spec__.submodule_search_locations = [path]
    sys.modules["k_diffusion"] = pkg
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception as e:  # pragma: no cover - depends on the box
        print(f"# k-diffusion sampling could not be imported: {e!r}")
        return None
    finally:
        if stubbed:  # k-diffusion's modules keep their references; others (diffusers) must not see the stand-ins
            for name in stubs:
                sys.modules.pop(name, None)


def load_k_diffusion_external():
    """k-diffusion's ``external`` module (its wrappers of eps-networks as denoisers), or None."""
    if load_k_diffusion_sampling() is None:
        return None
    try:
        return importlib.import_module("k_diffusion.external")
    except Exception as e:  # pragma: no cover - depends on the box
        print(f"# k-diffusion external could not be imported: {e!r}")
        return None
