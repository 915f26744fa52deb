"""Example notebooks, shipped with the package so `burstlab quickstart` finds them after `pip install .`."""
