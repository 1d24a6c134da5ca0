"""Training system and experiment task modules.

Run an experiment with `python -m experiments.train --config=configs/<name>.py`; the
library modules here (`trainer`, `train_state`, `parallel`, `optimizers`, `losses`,
`checkpointing`, `metrics_writer`) are importable from a notebook.
"""
