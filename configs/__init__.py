"""Experiment configurations: one file per experiment, `get_config(arg)` in each.

Load one by path with `--config=configs/<name>.py[:variant]`; shared defaults live in
`configs/common.py`.
"""
