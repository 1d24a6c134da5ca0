"""Benchmarks: train step, compile time, FLOP counting, input pipeline, scaling."""
