"""Folding an attention layer's query and output projections into its keys and values.

When there are many more queries than keys (e.g. the optical-flow decoder: 182,528
output queries of 322 channels against 2,048 latents, one head of 512 channels), it
takes fewer operations to map each key into the query's input space than to project
every query, and to map each value into the output space than to project every
attended value:

  logits_h = (x_q w_q,h + b_q,h) . k_h = x_q . (k_h w_q,h^T) + (b_q,h . k_h)
  output = sum_h (p_h v_h) w_o,h + b_o = sum_h p_h (v_h w_o,h) + b_o

The first regrouping gives keys of `Cq + 1` channels (the query bias becomes a last
key channel met by a constant 1 appended to the queries); the second gives values of
`Cout` channels, summed over heads after the attention. These are the same sums as the
projections, regrouped, so outputs agree with them up to float rounding. The layer's
parameters are unchanged. `perceiver._src.dot_product_attention.factorized_attend`
does the converse, for many keys and few queries.

Shape glossary:
  B: batch size.  T: queries.  S: keys/values.  H: heads.
  D, Dv: channels per head of queries/keys and of values.
  Cq: channels of the query inputs.  Cout: output channels.
"""

import jax.numpy as jnp


def query_folding_saves_work(
  *, num_queries, num_keys, query_channels, num_heads, head_channels
):
  """Whether folding the query projection into the keys takes fewer FLOPs.

  Projecting T queries of Cq channels to H heads of D channels and contracting them
  with S keys costs `T Cq H D + H T S D` multiply-adds; mapping the keys into the
  query space and contracting with the raw queries (plus the bias channel) costs
  `S H D Cq + H T S (Cq + 1)`. It pays for many queries with fewer channels than the
  heads (the optical-flow decoder: about 45% fewer).
  """
  direct = num_queries * query_channels * num_heads * head_channels + (
    num_heads * num_queries * num_keys * head_channels
  )
  folded = num_keys * num_heads * head_channels * query_channels + (
    num_heads * num_queries * num_keys * (query_channels + 1)
  )
  return folded < direct


def output_folding_saves_work(
  *, num_queries, num_keys, output_channels, num_heads, head_channels
):
  """Whether folding the output projection into the values takes fewer FLOPs.

  Attending to S values of H heads of Dv channels and projecting the T results to
  Cout channels costs `H T S Dv + T H Dv Cout` multiply-adds; projecting the values
  first costs `S H Dv Cout + H T S Cout`. It pays for many queries and fewer output
  channels than value channels per head.
  """
  direct = num_heads * num_queries * num_keys * head_channels + (
    num_queries * num_heads * head_channels * output_channels
  )
  folded = num_keys * num_heads * head_channels * output_channels + (
    num_heads * num_queries * num_keys * output_channels
  )
  return folded < direct


def fold_query_projection(inputs_q, keys, w_q, b_q):
  """Queries and keys whose products are the logits of the projected queries.

  Args:
    inputs_q: `[B, T, Cq]` query inputs (before the projection).
    keys: `[B, S, H, D]` projected keys.
    w_q: `[Cq, H * D]` query projection weights.
    b_q: `[H * D]` query projection bias, or None.

  Returns:
    `(queries [B, T, H, Cq'], keys [B, S, H, Cq'])` with Cq' = Cq + 1 with a bias
    (the queries' last channel is 1, the keys' is `b_q,h . k_h`) or Cq without.
  """
  batch, q_len, channels = inputs_q.shape
  heads, depth = keys.shape[2:]
  w_q = jnp.reshape(w_q, (channels, heads, depth))
  folded_keys = jnp.einsum('bshd,chd->bshc', keys, w_q)  # [B, S, H, Cq]
  queries = inputs_q
  if b_q is not None:
    key_bias = jnp.einsum('bshd,hd->bsh', keys, jnp.reshape(b_q, (heads, depth)))
    folded_keys = jnp.concatenate([folded_keys, key_bias[..., None]], axis=-1)
    ones = jnp.ones((batch, q_len, 1), inputs_q.dtype)
    queries = jnp.concatenate([inputs_q, ones], axis=-1)
  queries = jnp.broadcast_to(
    queries[:, :, None, :], (batch, q_len, heads, queries.shape[-1])
  )
  return queries, folded_keys.astype(inputs_q.dtype)


def fold_output_projection(values, w_o):
  """Values `[B, S, H, Cout]` mapped through each head's rows of `w_o` `[H * Dv, Cout]`."""
  heads, depth = values.shape[2:]
  w_o = jnp.reshape(w_o, (heads, depth, w_o.shape[-1]))
  return jnp.einsum('bshd,hdo->bsho', values, w_o)


def sum_heads(attended, num_heads, b_o):
  """The layer's output from attention over folded values: `[B, T, H * Cout]` summed
  over heads, plus the output bias `b_o` `[Cout]` (or None) -> `[B, T, Cout]`."""
  batch, q_len, width = attended.shape
  out = jnp.sum(
    jnp.reshape(attended, (batch, q_len, num_heads, width // num_heads)), axis=2
  )
  return out if b_o is None else out + b_o
