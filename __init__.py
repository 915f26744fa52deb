"""Not a package: this file is here only to explain a mistake.

Python looks in the current folder first, so when you run Python from the folder that CONTAINS a burstlab
source checkout named ``burstlab``, ``import burstlab`` finds this checkout's top folder instead of the
installed package (it used to become an empty namespace package: "module 'burstlab' has no attribute ...").
The real package lives in ``burstlab/`` below this folder and installs with ``pip install -e .``.
"""

import os as _os

if __name__ == "burstlab":  # other tools (pytest) may import this file under another name: leave them be
    raise ImportError(
        f"`import burstlab` found the source checkout {_os.path.dirname(_os.path.abspath(__file__))} instead of the "
        "installed package, because Python looks in the current folder first. Run Python from another folder (for "
        "example inside the checkout: `cd burstlab`), after installing it there with `pip install -e .`."
    )
