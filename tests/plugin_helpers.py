"""The plug-in's own modules (plugin/brushwork/NAME.py) for the tests that check them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PLUGIN = Path(__file__).resolve().parents[1] / "plugin" / "brushwork"


def plugin_module(name: str) -> ModuleType:
    """plugin/brushwork/`name`.py, loaded once by file path: putting plugin/brushwork on
    sys.path would let its brushwork.py shadow the brushwork package."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PLUGIN / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
