"""Sampling from Perceiver AR with per-layer key/value caches.

A full call of the model costs a cross-attention over the whole context plus the latent
stack; with the caches, each new token costs one latent: its key/value projection is
appended to the cross-attention cache and its latent attends to the cached latents.

The caches are fixed-size memories (`memory_type='fixed_size_rotated_kv'`: the keys are
kept after their rotary encoding, if any, so they are encoded once): the cross-attention
layers hold one entry per context position (`context_length`), the self-attention
layers one per latent (`num_latents`, the model's N). As in the release's sampler, a
full call over the sequence with `reset_latents` (R, default N / 2) latents refills the
caches whenever the latent caches are full (and for the prompt); each following token
adds one latent, until N. So the step that finds n latents in the caches computes
exactly the logits of a full call over the same tokens with n latents, which
`latent_counts` gives per step; tests check the two agree to float32 rounding.

The sequence (prompt and generated tokens) must fit the context: beyond it the oldest
tokens would leave the caches, which no full call of the model reproduces.

Shape glossary:
  B: batch size.
  C: context length (positions of the token buffer); I: position dimensions.
  K: vocabulary.
"""

from typing import Any, Callable, Dict, List, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver._src import ar_attention
from perceiver._src.ar_model import PerceiverAR


def _check_sampling(temperature, top_k, top_p):
  if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
    raise ValueError(
      f'Need temperature >= 0, 0 < top_p <= 1 and top_k >= 0; got temperature='
      f'{temperature}, top_p={top_p}, top_k={top_k}.'
    )


def sample_logits(rng, logits, *, temperature=1.0, top_k=0, top_p=1.0):
  """Draws one token per row of `logits` `[B, K]`.

  `temperature` 0 takes the most likely token. Otherwise the logits are divided by
  the temperature, limited to the `top_k` most likely tokens (0: all) and to the
  smallest set of most likely tokens whose probability reaches `top_p` (nucleus
  sampling; 1: all), and a token is drawn from what remains.

  Returns:
    `[B]` int32 tokens.
  """
  _check_sampling(temperature, top_k, top_p)
  logits = logits.astype(jnp.float32)
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  if top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    # Probability of the tokens strictly more likely than each one: keep a token
    # while that is below top_p (the most likely one is always kept).
    before = jnp.cumsum(probs, axis=-1) - probs
    num_kept = jnp.sum(before < top_p, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(ordered, num_kept - 1, axis=-1)
    logits = jnp.where(logits >= threshold, logits, -jnp.inf)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def latent_counts(num_steps, num_latents, reset_latents):
  """The number of latents in the caches at each of `num_steps` cached steps.

  Step 0 (the prompt) and every step that finds the caches full are full calls with
  `reset_latents` latents; the steps between add one latent each.
  """
  counts, count = [], None
  for _ in range(num_steps):
    count = reset_latents if count is None or count == num_latents else count + 1
    counts.append(count)
  return counts


def _memory_layout(model_kwargs):
  """`[(is_cross_attention, heads, qk channels, v channels)]` per attention layer."""
  z_channels = model_kwargs.get('num_z_channels', 1024)
  embed = model_kwargs.get('input_embed_dim', 1024)
  cross_heads = model_kwargs.get('num_cross_attend_heads', 1)
  self_heads = model_kwargs.get('num_transformer_heads', 8)
  shape = model_kwargs.get('cross_attention_shape_for_attn', 'kv')
  cross_qk = embed if shape == 'kv' else z_channels
  cross = (True, cross_heads, cross_qk, cross_qk)
  self_layer = (False, self_heads, z_channels, z_channels)
  after = set(model_kwargs.get('additional_cross_attend_after_layers') or ())
  layout = [cross] if model_kwargs.get('include_initial_cross_attention', True) else []
  for i in range(model_kwargs.get('num_transformers_per_block', 12)):
    layout.append(self_layer)
    if i in after:
      layout.append(cross)
  return layout


class Sampler:
  """Cached and uncached generation from a `PerceiverAR` built from `model_kwargs`.

  Args:
    model_kwargs: the model's constructor keywords (`use_positions_from_data` must be
      True: cached positions cannot move).
    context_length: C, the token buffer (default: `max_context_length`).
    reset_latents: R, latents of the full calls that refill the caches (default
      N / 2, at least 1).
    name: the model's module name (as in the parameters).
  """

  def __init__(
    self,
    model_kwargs: Dict[str, Any],
    *,
    context_length: Optional[int] = None,
    reset_latents: Optional[int] = None,
    name: str = 'perceiver_ar',
  ):
    self.model_kwargs = dict(model_kwargs)
    if not self.model_kwargs.get('use_positions_from_data', False):
      raise ValueError('Cached sampling needs use_positions_from_data=True.')
    if self.model_kwargs.get('num_latents_per_position', 1) != 1:
      raise ValueError('Cached sampling needs num_latents_per_position=1.')
    if self.model_kwargs.get('initial_query_embed_style', 'none') == 'learned' and not (
      self.model_kwargs.get('share_learned_initial_query', False)
    ):
      raise ValueError('Cached sampling needs a shared learned initial query.')
    self.num_latents = self.model_kwargs.get('z_index_dim', 1024)
    self.context_length = context_length or self.model_kwargs['max_context_length']
    if self.context_length < self.num_latents:
      raise ValueError(
        f'context_length ({self.context_length}) must be at least z_index_dim '
        f'({self.num_latents}).'
      )
    self.reset_latents = reset_latents or max(1, self.num_latents // 2)
    if not 1 <= self.reset_latents <= self.num_latents:
      raise ValueError(
        f'reset_latents must be in [1, {self.num_latents}], got {self.reset_latents}.'
      )
    self._rotary = self.model_kwargs['position_encoding_type'] == 'rotary'
    self._layout = _memory_layout(self.model_kwargs)

    def forward(tokens, idxs, memory=None, z_index_dim=None):
      model = PerceiverAR(**self.model_kwargs, name=name)
      return model(
        tokens,
        idxs,
        is_training=False,
        memory_type='none' if memory is None else 'fixed_size_rotated_kv',
        memory=memory,
        z_index_dim=z_index_dim,
      )

    self._model = hk.transform(forward)
    self._full_logits = jax.jit(self._full_logits_fn, static_argnames='num_latents')
    # One compiled function per kind of step and sampling setting, each a single
    # dispatch per token (the call, the draw and the token buffer's update).
    self._sampling_steps = {}

  def init(self, rng, tokens, idxs):
    """Initial parameters (for tests and benchmarks; training makes the real ones)."""
    return self._model.init(rng, tokens, idxs)

  def empty_memory(
    self, batch_size, dtype=jnp.float32
  ) -> List[ar_attention.AttentionState]:
    """Zeroed caches with no valid entry: one `AttentionState` per attention layer."""
    memory = []
    for is_cross, heads, qk, v in self._layout:
      size = self.context_length if is_cross else self.num_latents
      memory.append(
        ar_attention.AttentionState(
          k=jnp.zeros([batch_size, size, heads, qk // heads], dtype),
          v=jnp.zeros([batch_size, size, heads, v // heads], dtype),
          kv_positions=jnp.zeros([batch_size, size], jnp.int32) if self._rotary else None,
          memory_mask=jnp.zeros([batch_size, size], jnp.float32),
        )
      )
    return memory

  def _full_logits_fn(self, params, tokens, idxs, length, num_latents):
    """Logits `[B, K]` after token `length - 1` of a full call with `num_latents`."""
    tokens = jnp.where(jnp.arange(tokens.shape[1]) < length, tokens, 0)
    out = self._model.apply(params, None, tokens, idxs, z_index_dim=num_latents)
    return out.input_events_logits[:, -1]

  def _refill_fn(self, params, tokens, idxs, length):
    """A full call with R latents into empty caches: `(logits [B, K], memory)`."""
    batch = tokens.shape[0]
    tokens = jnp.where(jnp.arange(tokens.shape[1]) < length, tokens, 0)
    out = self._model.apply(
      params,
      None,
      tokens,
      idxs,
      memory=self.empty_memory(batch),
      z_index_dim=self.reset_latents,
    )
    memory = []
    for (is_cross, *_), state in zip(self._layout, out.perceiver_state):
      if is_cross:
        # Entries [0, length) hold the sequence, the rest padding: mark them and
        # move the sequence to the end, where the next entries are rolled in.
        valid = (jnp.arange(self.context_length) < length).astype(jnp.float32)
        state = jax.tree.map(
          lambda x: jnp.roll(x, -length, axis=1),
          state._replace(
            memory_mask=jnp.broadcast_to(valid, (batch, self.context_length))
          ),
        )
      else:
        # Latents before the sequence start (position -1) are not valid keys.
        valid = (out.latent_last_steps >= 0).astype(jnp.float32)
        mask = state.memory_mask.at[:, -self.reset_latents :].set(valid)
        state = state._replace(memory_mask=mask)
      memory.append(state)
    return out.input_events_logits[:, -1], memory

  def _step_fn(self, params, memory, tokens, idxs, length):
    """Adds token `length - 1` to the caches: `(logits [B, K], memory)`."""
    index = length - 1
    token = jax.lax.dynamic_slice_in_dim(tokens, index, 1, axis=1)
    idx = jax.lax.dynamic_slice_in_dim(idxs, index, 1, axis=1)
    out = self._model.apply(params, None, token, idx, memory=memory, z_index_dim=1)
    return out.input_events_logits[:, -1], out.perceiver_state

  def _sampling_step(self, kind, settings):
    """The jitted `(params, memory, tokens, idxs, length, rng) -> (logits, memory,
    tokens, rng)` of one generated token: `kind` 'refill', 'step' or 'full' (a full call
    with N latents, no memory), sampling with `settings` (temperature, top_k, top_p)."""
    key = (kind, settings)
    if key not in self._sampling_steps:
      temperature, top_k, top_p = settings

      def fn(params, memory, tokens, idxs, length, rng):
        rng, key = jax.random.split(rng)
        if kind == 'refill':
          logits, memory = self._refill_fn(params, tokens, idxs, length)
        elif kind == 'step':
          logits, memory = self._step_fn(params, memory, tokens, idxs, length)
        else:
          logits = self._full_logits_fn(params, tokens, idxs, length, self.num_latents)
        new = sample_logits(
          key,
          logits.at[:, 0].set(-jnp.inf),  # Never padding.
          temperature=temperature,
          top_k=top_k,
          top_p=top_p,
        )
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, new[:, None], length, axis=1)
        return logits, memory, tokens, rng

      self._sampling_steps[key] = jax.jit(fn)
    return self._sampling_steps[key]

  def default_positions(self, batch_size):
    """`[B, C, 1]` positions 1, 2, ..., C (0 is the padding position)."""
    idxs = jnp.arange(1, self.context_length + 1, dtype=jnp.int32)[None, :, None]
    return jnp.broadcast_to(idxs, (batch_size, self.context_length, 1))

  def generate(
    self,
    params,
    prompt,
    num_tokens: int,
    *,
    rng=None,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    cached: bool = True,
    input_idxs=None,
    logits_callback: Optional[Callable[[int, jax.Array], None]] = None,
  ) -> np.ndarray:
    """Continues `prompt` `[B, P]` (ids > 0) by `num_tokens` sampled tokens.

    Args:
      params: the model's parameters.
      prompt: `[B, P]` token ids, P >= 1.
      num_tokens: how many tokens to generate (P + num_tokens <= C).
      rng, seed: the sampling key (default: `PRNGKey(seed)`).
      temperature, top_k, top_p: see `sample_logits`; padding (id 0) is never drawn.
      cached: use the caches (one latent per token); False runs a full call with N
        latents per token.
      input_idxs: `[B, C, I]` positions of every buffer slot (default
        `default_positions`).
      logits_callback: called as `fn(step, logits [B, K])` for each generated token.

    Returns:
      `[B, P + num_tokens]` int32: the prompt and the generated tokens.
    """
    prompt = np.asarray(prompt, dtype=np.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or (prompt <= 0).any():
      raise ValueError(
        f'prompt must be [B, P] token ids > 0 with P >= 1, got shape {prompt.shape}.'
      )
    batch, length = prompt.shape
    if num_tokens < 0 or length + num_tokens > self.context_length:
      raise ValueError(
        f'The prompt ({length} tokens) and num_tokens ({num_tokens}) must fit the '
        f'context of {self.context_length} positions.'
      )
    _check_sampling(temperature, top_k, top_p)
    settings = (float(temperature), int(top_k), float(top_p))
    rng = jax.random.PRNGKey(seed) if rng is None else rng
    idxs = (
      self.default_positions(batch) if input_idxs is None else jnp.asarray(input_idxs)
    )
    tokens = jnp.zeros([batch, self.context_length], jnp.int32).at[:, :length].set(prompt)
    memory, count = None, None
    for step in range(num_tokens):
      if not cached:
        kind = 'full'
      elif count is None or count == self.num_latents:
        kind, count = 'refill', self.reset_latents
      else:
        kind, count = 'step', count + 1
      logits, memory, tokens, rng = self._sampling_step(kind, settings)(
        params, memory, tokens, idxs, length, rng
      )
      if logits_callback is not None:
        logits_callback(step, logits)
      length += 1
    return np.asarray(tokens[:, :length])

  def full_call_logits(self, params, tokens, num_latents, input_idxs=None):
    """Logits `[B, K]` of the token after each row of `tokens` `[B, L]` from one full
    call with `num_latents` latents (the uncached reference of a cached step). Rows
    may end with padding (0): each row's tokens are those before its first 0."""
    tokens = np.asarray(tokens, dtype=np.int32)
    batch, length = tokens.shape
    buffer = jnp.zeros([batch, self.context_length], jnp.int32).at[:, :length].set(tokens)
    idxs = (
      self.default_positions(batch) if input_idxs is None else jnp.asarray(input_idxs)
    )
    return self._full_logits(params, buffer, idxs, length, num_latents=num_latents)
