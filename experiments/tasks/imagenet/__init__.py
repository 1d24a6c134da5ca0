"""ImageNet classification: task, tf.data pipeline, augmentation, data preparation."""
