"""Training and fine-tuning: patch sampling from lazy stacks, augmentations, loss, metrics, the loop."""
