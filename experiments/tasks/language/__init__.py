"""Byte-level language: masked language modelling, GLUE fine-tuning, fill-mask."""
