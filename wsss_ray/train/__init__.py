"""Training stage: segmentation model, CGL/CE losses and joint augmentation (pure torch here; Ray wiring elsewhere)."""
