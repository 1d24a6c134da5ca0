"""Training, evaluation and tools for the Perceiver experiments.

The modules at this level are the commands a user runs (`python -m experiments.train`,
`experiments.benchmark`, `experiments.fill_mask`); their logic lives in packages a
notebook can import:

  training/         task-agnostic machinery: trainer, train state, optimizers, losses,
                    pmap, checkpoints, preemption, metrics, host memory, task contract.
  tasks/<family>/   one package per experiment family: task module, input pipeline,
                    augmentation, metrics, data preparation.
  benchmarks/       speed, compile-time and input-pipeline benchmarks; scaling study.
"""
