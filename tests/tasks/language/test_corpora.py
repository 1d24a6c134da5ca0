"""Tests of text sources and packing (experiments/tasks/language/corpora.py)."""

import json
import random

import numpy as np
import pytest

from experiments.tasks.language import corpora as text_input


def _documents():
  rng = random.Random(5)
  alphabet = ['a', 'b', ' ', 'é', '€', '\n', 'z', '🙂']
  docs = [
    ''.join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) for _ in range(23)
  ]
  return [d.encode('utf-8') for d in docs if d.strip()]


@pytest.mark.parametrize('packing', ['pack', 'pad'])
@pytest.mark.parametrize('seq_len', [7, 13, 64])
def test_packing_round_trips(packing, seq_len):
  docs = _documents()
  sequences = list(text_input.pack_documents(docs, seq_len, packing=packing))
  ids = np.stack([s[0] for s in sequences])
  mask = np.stack([s[1] for s in sequences])
  assert ids.shape[1] == seq_len and ids.dtype == np.int32
  assert text_input.unpack_sequences(ids, mask) == docs
  # Padding is PAD with mask 0; everything else is a real id with mask 1.
  assert np.all(ids[mask == 0] == text_input.PAD_ID)
  assert np.all(ids[mask == 1] != text_input.PAD_ID)
  assert len(sequences) == text_input.count_sequences(docs, seq_len, packing=packing)
  if packing == 'pack':  # Only the last sequence may be padded.
    assert mask[:-1].all()
  else:  # Every document starts a sequence: nothing follows an EOS but padding.
    for row, row_mask in zip(ids, mask):
      eos = np.flatnonzero(row == text_input.EOS_ID)
      if eos.size:
        assert eos.size == 1 and not row_mask[eos[0] + 1 :].any()


def test_pack_exact_values():
  # "ab" EOS "c" EOS "def" EOS at length 4: [ab E c] [E d e f] [E pad pad pad].
  seqs = list(text_input.pack_documents([b'ab', 'c', b'', b'def'], 4))
  b = lambda s: [x + 6 for x in s.encode()]  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_array_equal(seqs[0][0], b('ab') + [2] + b('c'))
  np.testing.assert_array_equal(seqs[1][0], [2] + b('def'))
  np.testing.assert_array_equal(seqs[2][0], [2, 0, 0, 0])
  np.testing.assert_array_equal(seqs[2][1], [1, 0, 0, 0])


def test_bad_packing_arguments():
  with pytest.raises(ValueError, match='packing'):
    list(text_input.pack_documents([b'a'], 8, packing='squash'))
  with pytest.raises(ValueError, match='seq_len'):
    list(text_input.pack_documents([b'a'], 1))


def test_file_documents_text_and_jsonl(tmp_path):
  text = tmp_path / 'a.txt'
  text.write_bytes(b'First para\nline two\n\n\n  \nSecond para\n')
  jsonl = tmp_path / 'b.jsonl'
  jsonl.write_text(
    json.dumps({'body': 'héllo'}) + '\n\n' + json.dumps({'body': 'world'}) + '\n',
    encoding='utf-8',
  )
  paths = text_input.expand_file_patterns(f'{tmp_path}/*.txt, {tmp_path}/*.jsonl')
  assert paths == [str(text), str(jsonl)]
  docs = list(text_input.iter_file_documents(paths, text_field='body'))
  assert docs == [b'First para\nline two', b'Second para', 'héllo'.encode(), b'world']
  lines = list(text_input.iter_file_documents([str(text)], document_unit='line'))
  assert lines == [b'First para', b'line two', b'Second para']
  whole = list(text_input.iter_file_documents([str(text)], document_unit='file'))
  assert whole == [text.read_bytes()]
  # JSON lines read as plain text when the format is forced.
  raw = list(text_input.iter_file_documents([str(jsonl)], file_format='text'))
  assert raw[0].startswith(b'{"body"')


def test_file_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match='matches no file'):
    text_input.expand_file_patterns(str(tmp_path / 'nothing*.txt'))
  with pytest.raises(ValueError, match='names no file pattern'):
    text_input.expand_file_patterns(' , ')
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "ok"}\n{"other": 1}\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:2 has no field .text.'):
    list(text_input.iter_file_documents([str(bad)]))
  bad.write_text('not json\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:1 is not valid JSON'):
    list(text_input.iter_file_documents([str(bad)]))
  with pytest.raises(ValueError, match='document_unit'):
    list(text_input.iter_file_documents([str(bad)], document_unit='page'))


def test_heldout_split_is_stable_and_disjoint():
  docs = [f'document number {i}'.encode() for i in range(2000)] + [b'same'] * 5
  train = list(text_input.split_documents(docs, 'train', 0.1))
  held = list(text_input.split_documents(reversed(docs), 'validation', 0.1))
  assert len(train) + len(held) == len(docs)
  assert not set(train) & set(held)
  assert 150 < len(set(held)) < 250  # about 10% of 2000
  assert list(text_input.split_documents(docs, 'test', 0.1)) == held[::-1]
  with pytest.raises(ValueError, match='split'):
    list(text_input.split_documents(docs, 'dev', 0.1))
  with pytest.raises(ValueError, match='heldout_fraction'):
    list(text_input.split_documents(docs, 'train', 0.0))


def test_shard_and_shuffle_buffer():
  items = list(range(17))
  shards = [list(text_input.shard(items, i, 3)) for i in range(3)]
  assert sorted(sum(shards, [])) == items
  assert max(map(len, shards)) - min(map(len, shards)) <= 1
  shuffled = list(text_input.shuffle_buffer(items, 5, random.Random(0)))
  assert sorted(shuffled) == items and shuffled != items
  with pytest.raises(ValueError, match='shard index'):
    list(text_input.shard(items, 3, 3))


def test_fake_documents_are_deterministic_text():
  a = text_input.fake_documents(1, 4)
  assert a == text_input.fake_documents(1, 4)
  assert a != text_input.fake_documents(2, 4)
  assert all(d.endswith(b'.') and b' ' in d for d in a)
