"""ImageNet classification of image files: preprocessing, class names, top-k, command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs import imagenet as imagenet_config
from experiments.tasks.imagenet import augment
from experiments.tasks.imagenet import class_names
from experiments.tasks.imagenet import classify
from experiments.training import errors
from experiments.training import weights
from tests import helpers


def _write_png(path, image):
  tf.io.write_file(str(path), tf.io.encode_png(np.asarray(image, np.uint8)))
  return str(path)


def test_class_names_from_the_public_list():
  classes = class_names.imagenet_classes()
  assert len(classes) == 1000
  assert classes[0] == ('n01440764', 'tench, Tinca tinca')
  assert class_names.class_name(207) == 'golden retriever'
  assert class_names.class_name(999) == 'toilet tissue'
  synsets = [s for s, _ in classes]
  assert synsets == sorted(synsets)  # TFDS labels are the sorted WordNet ids.


def test_eval_preprocessing_crops_the_centre_and_normalises(tmp_path):
  # 20 x 24: the crop is int(224/256 * 20) = 17 square at offset (2, 4).
  image = np.zeros([20, 24, 3], np.uint8)
  image[2:19, 4:21] = [200, 100, 50]
  path = _write_png(tmp_path / 'a.png', image)
  np.testing.assert_array_equal(classify.decode_image(path), image)
  out = classify.eval_image(image, image_size=7)
  assert out.shape == (7, 7, 3) and out.dtype == np.float32
  want = (np.array([200, 100, 50]) - np.array(augment.MEAN_RGB)) / np.array(
    augment.STDDEV_RGB
  )
  np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), rtol=1e-5, atol=1e-4)


def test_top_k_probabilities():
  logits = np.array([[0.0, np.log(3.0), 0.0, np.log(4.0)]])
  # exp: 1, 3, 1, 4 (sum 9); the tie between labels 0 and 2 keeps label 0 first.
  [best] = classify.top_k(logits, 3)
  assert [label for label, _ in best] == [3, 1, 0]
  np.testing.assert_allclose([p for _, p in best], [4 / 9, 3 / 9, 1 / 9], rtol=1e-12)


@pytest.fixture(scope='module')
def debug_checkpoint(tmp_path_factory):
  config = imagenet_config.get_config('debug')
  path = str(tmp_path_factory.mktemp('ckpt') / 'debug.npz')
  return helpers.random_checkpoint(config, path, seed=1), config


def test_classify_images_matches_the_model(debug_checkpoint, tmp_path):
  path, config = debug_checkpoint
  rng = np.random.RandomState(0)
  images = [
    _write_png(tmp_path / 'a.png', rng.randint(0, 256, [20, 24, 3])),
    _write_png(tmp_path / 'b.png', rng.randint(0, 256, [31, 17, 3])),
  ]
  model = weights.load_model(config, path)
  results = classify.classify(model, images, 3)
  batch = classify.image_batch(images, 16)
  logits = np.asarray(classify._logits_fn(model.model)(model.params, model.state, batch))
  logits = logits.astype(np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for result, p, image in zip(results, probs, images):
    assert result['image'] == image
    labels = [e['label'] for e in result['top_k']]
    assert labels == list(np.argsort(-p)[:3])
    np.testing.assert_allclose(
      [e['probability'] for e in result['top_k']], p[labels], atol=1e-6
    )
    assert result['top_k'][0]['name'] == class_names.class_name(labels[0])
  lines = classify.format_json(results).splitlines()
  assert [json.loads(line)['image'] for line in lines] == images
  text = classify.format_text(results)
  assert text.splitlines()[0] == f'{images[0]}:' and '  1. ' in text
  with pytest.raises(errors.ConfigError, match='top_k'):
    classify.classify(model, images, 0)


@pytest.mark.slow
def test_command_names_a_bad_image_and_exits_1(debug_checkpoint, tmp_path):
  path, _ = debug_checkpoint
  good = _write_png(tmp_path / 'good.png', np.zeros([9, 9, 3]))
  bad = tmp_path / 'broken.jpg'
  bad.write_bytes(b'\xff\xd8 this is not a JPEG')
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.classify',
      f'--checkpoint={path}',
      '--config=configs/imagenet.py:debug',
      f'--image={good}',
      f'--image={bad}',
    ],
    cwd=helpers.REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('classify: error: Cannot decode image') and 'broken.jpg' in last


def test_only_imagenet_classifiers_classify():
  classify.check_classifier(imagenet_config.get_config('io_conv'), 'imagenet_conv')
  from configs import mlm  # pylint: disable=g-import-not-at-top

  with pytest.raises(errors.ConfigError, match="'language_bytes' is not an ImageNet"):
    classify.check_classifier(mlm.get_config('bytes'), 'language_bytes')
  config = imagenet_config.get_config('debug')
  with config.unlocked():
    config.data.num_classes = 10
  with pytest.raises(errors.ConfigError, match='10 classes'):
    classify.check_classifier(config, 'mine')


def _header(kind, width, height):
  if kind == 'png':
    return (
      b'\x89PNG\r\n\x1a\n'
      + b'\0\0\0\rIHDR'
      + width.to_bytes(4, 'big')
      + (height.to_bytes(4, 'big'))
    )
  if kind == 'gif':
    return b'GIF89a' + width.to_bytes(2, 'little') + height.to_bytes(2, 'little')
  if kind == 'bmp':
    return (
      b'BM'
      + bytes(16)
      + width.to_bytes(4, 'little')
      + (
        (-height).to_bytes(4, 'little', signed=True)  # Top-down rows: negative height.
      )
    )
  # JPEG: SOI, an APP0 segment of 16 bytes, a DHT-like segment, then SOF2.
  app0 = b'\xff\xe0' + (16).to_bytes(2, 'big') + bytes(14)
  dht = b'\xff\xc4' + (5).to_bytes(2, 'big') + bytes(3)
  sof = b'\xff\xc2' + (11).to_bytes(2, 'big') + b'\x08'
  sof += height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + bytes(6)
  return b'\xff\xd8' + app0 + dht + sof


@pytest.mark.parametrize('kind', ['png', 'gif', 'bmp', 'jpeg'])
def test_image_size_comes_from_the_header(kind):
  assert classify.header_size(_header(kind, 1234, 567)) == (1234, 567)
  assert classify.header_size(b'not an image at all') is None


def test_a_huge_image_is_refused_before_decoding(tmp_path):
  # 1.2 MB on disk would decode to 20000 x 20000 x 3 bytes: refused from its header.
  huge = tmp_path / 'huge.png'
  huge.write_bytes(_header('png', 20000, 20000) + bytes(64))
  with pytest.raises(
    classify.BadImageError, match=r'huge.png.*20000 x 20000.*--max_image'
  ):
    classify.decode_image(str(huge))
  small = _write_png(tmp_path / 'small.png', np.zeros([6, 7, 3]))
  assert classify.decode_image(small, max_pixels=42).shape == (6, 7, 3)
  with pytest.raises(classify.BadImageError, match='41 allowed'):
    classify.decode_image(small, max_pixels=41)
