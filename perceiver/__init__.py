"""Perceiver and Perceiver IO in JAX + Haiku.

Public modules (drop-in compatible with DeepMind's official release):

  from perceiver import perceiver, io_processors, position_encoding, bytes_tokenizer
"""

__version__ = '0.1.0'
