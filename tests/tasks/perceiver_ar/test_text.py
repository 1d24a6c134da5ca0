"""Byte-level text: local files, the PG-19 layout, windows and n-gram baselines."""

import math

import numpy as np
import pytest

from configs import perceiver_ar as perceiver_ar_config
from experiments.tasks.perceiver_ar import sequences
from experiments.tasks.perceiver_ar import task
from experiments.tasks.perceiver_ar import text


def _write_pg19(root):
  books = {
    'train': {'b.txt': b'Second book.', 'a.txt': b'First book\n', 'notes.md': b'skip'},
    'validation': {'v.txt': b'Held out.'},
    'test': {'t1.txt': b'xy', 't2.txt': b'z'},
  }
  for split, files in books.items():
    (root / split).mkdir(parents=True)
    for name, content in files.items():
      (root / split / name).write_bytes(content)
  return str(root)


def test_pg19_layout_reader(tmp_path):
  root = _write_pg19(tmp_path / 'pg19')
  assert [p.rsplit('/', 1)[1] for p in text.pg19_files(root, 'train')] == [
    'a.txt',
    'b.txt',
  ]
  assert text.documents('train', '', root, 0.05) == (b'First book\n', b'Second book.')
  assert text.documents('test', '', root, 0.05) == (b'xy', b'z')
  tokens = text.stream(text.documents('test', '', root, 0.05))
  np.testing.assert_array_equal(tokens, [ord('x') + 3, ord('y') + 3, 1, ord('z') + 3, 1])
  with pytest.raises(ValueError, match='is not one of the PG-19 splits'):
    text.pg19_files(root, 'dev')
  (tmp_path / 'empty' / 'train').mkdir(parents=True)
  with pytest.raises(ValueError, match=r'holds no \.txt book'):
    text.pg19_files(str(tmp_path / 'empty'), 'train')
  with pytest.raises(ValueError, match='has no validation/ directory'):
    text.pg19_files(str(tmp_path / 'empty'), 'validation')


def test_local_files_split_by_content_hash(tmp_path):
  contents = [f'document number {i}\n'.encode() for i in range(40)]
  for i, content in enumerate(contents):
    (tmp_path / f'{i:02d}.py').write_bytes(content)
  pattern = str(tmp_path / '*.py')
  train = text.documents('train', pattern, '', 0.25)
  heldout = text.documents('validation', pattern, '', 0.25)
  assert sorted(train + heldout) == sorted(contents)
  assert 0 < len(heldout) < 20
  assert all(text.is_heldout(d, 0.25) for d in heldout)
  # The split depends on the content only, not on the file names.
  (tmp_path / 'zz.py').write_bytes(heldout[0])
  assert heldout[0] in text.documents(
    'validation', pattern + ',' + str(tmp_path / 'zz.py'), '', 0.25
  )
  with pytest.raises(ValueError, match="pattern '/nonexistent/\\*.txt' matches no file"):
    text.expand_patterns('/nonexistent/*.txt')


def test_ngram_baselines_by_hand():
  # Tokens 3, 4, 3, 4, 3 over a vocabulary of 5 (add-one smoothing).
  baselines = text.NGramBaselines(np.array([3, 4, 3, 4, 3]), vocab_size=5)
  unigram, bigram = baselines.bits(np.array([3, 4]), np.array([4, 3]))
  # Unigram counts +1: [1, 1, 1, 4, 3] / 10.
  assert unigram == pytest.approx(-(math.log2(3 / 10) + math.log2(4 / 10)) / 2)
  # Bigrams 3->4 twice, 4->3 twice; row 3: [1, 1, 1, 1, 3] / 7, row 4: [1, 1, 1, 3, 1] / 7.
  assert bigram == pytest.approx(-math.log2(3 / 7))


def test_training_windows_and_block_evaluation():
  tokens = np.arange(3, 3 + 20, dtype=np.int32)
  tokens[9] = sequences.EOS_ID
  batch = text.train_batch(tokens, np.random.default_rng(0), 4, context=6)
  for row in range(4):
    start = batch['inputs'][row, 0] - 3 if batch['inputs'][row, 0] != 1 else 9
    np.testing.assert_array_equal(batch['input_idxs'][row, :, 0], np.arange(1, 7))
    np.testing.assert_array_equal(batch['targets'][row, :5], batch['inputs'][row, 1:])
    np.testing.assert_array_equal(batch['weights'][row], batch['targets'][row] != 1)
    del start
  num, example = text.eval_source(tokens, context=6, block=4, eval_bytes=10)
  assert num == 3  # Targets 0..9 in blocks of 4.
  windows = [example(i) for i in range(num)]
  scored = np.concatenate([w['targets'][w['weights'] > 0] for w in windows])
  # Every target but the EOS one (token 9 -> target 8) is scored once.
  np.testing.assert_array_equal(scored, [t for t in tokens[1:11] if t != 1])
  last = windows[-1]
  np.testing.assert_array_equal(last['inputs'], tokens[4:10])
  np.testing.assert_array_equal(last['input_idxs'][:, 0], np.arange(1, 7))


def test_bits_per_byte_and_baselines_in_the_summary(tmp_path):
  for i in range(30):
    (tmp_path / f'{i}.txt').write_bytes(b'abab' * (i + 5))
  config = perceiver_ar_config.get_config('bytes')
  config.data.files = str(tmp_path / '*.txt')
  config.data.heldout_fraction = 0.3
  scored = np.ones((2, 3), np.float32)
  per_example = {
    'nll_sum': np.array([3.0, 3.0]) * math.log(2.0),
    'num_scored': np.array([3.0, 3.0]),
    'num_unreached': np.zeros(2),
    'num_correct': np.array([3.0, 0.0]),
    'targets': np.full((2, 3), ord('b') + 3),
    'previous': np.full((2, 3), ord('a') + 3),
    'weights': scored,
  }
  summary = task.summarize_eval(per_example, config)
  assert summary['bits_per_byte'] == pytest.approx(1.0)
  assert summary['accuracy'] == pytest.approx(0.5)
  # 'a' is always followed by 'b' in the training text (add-one smoothed over 259).
  train = text.documents('train', config.data.files, '', 0.3)
  pairs = sum(len(d) // 2 for d in train)  # 'ab' pairs; 'a' is never followed by more.
  want = -math.log2((pairs + 1) / (pairs + 259))
  assert summary['bigram_bits_per_byte'] == pytest.approx(want)
  halves = sum(len(d) for d in train) // 2 + 1  # 'b' counts (+1) over all tokens.
  total = sum(len(d) + 1 for d in train) + 259
  assert summary['unigram_bits_per_byte'] == pytest.approx(-math.log2(halves / total))
