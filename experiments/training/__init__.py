"""Task-agnostic training machinery: the loop, its state, optimizers and I/O."""
