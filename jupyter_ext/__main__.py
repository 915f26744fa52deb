"""``python -m burstlab.jupyter_ext`` is ``jupyter burstlab``."""

from .app import main

if __name__ == "__main__":
    main()
