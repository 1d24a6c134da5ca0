"""A tokenizer of UTF-8 bytes with six reserved ids, as used by the Perceiver IO byte MLM.

Ids: PAD 0, BOS 1, EOS 2, MASK 3, CLS 4, SEP 5; byte `b` has id `b + 6`; vocab size 262.
"""

from typing import Union

import numpy as np

NUM_RESERVED_TOKENS = 6


class BytesTokenizer:
  """Converts between text and int32 ids of UTF-8 bytes shifted by 6 reserved ids."""

  def __init__(self):
    self._num_reserved_tokens = NUM_RESERVED_TOKENS

  def to_string(self, inputs) -> str:
    """Decodes ids to text, dropping reserved ids; invalid UTF-8 becomes U+FFFD.

    Raises:
      ValueError: an id outside `[0, vocab_size)` (named), or ids that are not integers.
    """
    inputs = np.asarray(inputs)
    if inputs.size and not np.issubdtype(inputs.dtype, np.integer):
      raise ValueError(f'inputs must be integer ids, got dtype {inputs.dtype}.')
    inputs = inputs.reshape(-1)
    bad = (inputs < 0) | (inputs >= self.vocab_size)
    if bad.any():
      raise ValueError(
        f'inputs contain id {int(inputs[bad][0])} outside [0, {self.vocab_size}) '
        f'({int(bad.sum())} such id(s)).'
      )
    inputs_no_special = inputs[inputs >= self._num_reserved_tokens]
    decoded = (inputs_no_special - self._num_reserved_tokens).astype(np.uint8).tobytes()
    return decoded.decode('utf-8', errors='replace')

  def to_int(self, inputs: Union[str, bytes]) -> np.ndarray:
    """Encodes text (str, as UTF-8) or bytes to int32 ids `[len(bytes)]`."""
    if isinstance(inputs, str):
      inputs = inputs.encode('utf-8')
    if not isinstance(inputs, (bytes, bytearray)):
      raise ValueError(f'inputs must be str or bytes, got {type(inputs).__name__}.')
    encoded = np.frombuffer(bytes(inputs), np.uint8).astype(np.int32)
    return encoded + self._num_reserved_tokens

  @property
  def vocab_size(self) -> int:
    return 256 + self._num_reserved_tokens

  @property
  def pad_token(self) -> int:
    return 0

  @property
  def bos_token(self) -> int:
    return 1

  @property
  def eos_token(self) -> int:
    return 2

  @property
  def mask_token(self) -> int:
    return 3

  @property
  def cls_token(self) -> int:
    return 4

  @property
  def sep_token(self) -> int:
    return 5
