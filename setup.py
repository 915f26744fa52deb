"""setuptools glue for the JupyterLab extension; everything else is in pyproject.toml.

labextension/burstlab_build.py (the build backend) builds the extension into labextension/prebuilt/ first; this
file ships that folder as data files, so JupyterLab finds it in <prefix>/share/jupyter/labextensions/burstlab-lab.
"""

from pathlib import Path

from setuptools import Distribution, setup

HERE = Path(__file__).resolve().parent
PREBUILT = HERE / "labextension" / "prebuilt"
TARGET = "share/jupyter/labextensions/burstlab-lab"


def labextension_data_files() -> list[tuple[str, list[str]]]:
    by_dir: dict[str, list[str]] = {}
    if PREBUILT.is_dir():
        for f in sorted(PREBUILT.rglob("*")):
            if f.is_file():
                rel = f.relative_to(PREBUILT).parent.as_posix()
                dest = TARGET if rel == "." else f"{TARGET}/{rel}"
                by_dir.setdefault(dest, []).append(f.relative_to(HERE).as_posix())
    return sorted(by_dir.items())


class BurstlabDistribution(Distribution):
    def parse_config_files(self, *args, **kwargs):
        # pyproject.toml's [tool.setuptools.data-files] replaces setup()'s data_files: add ours after it.
        super().parse_config_files(*args, **kwargs)
        self.data_files = list(self.data_files or []) + labextension_data_files()

    def has_data(self) -> bool:
        # setuptools' editable_wheel installs data files only if the distribution has `has_data()`; distutils
        # names it has_data_files(). Without this, `pip install -e .` would leave the extension out.
        return self.has_data_files()


setup(distclass=BurstlabDistribution)
