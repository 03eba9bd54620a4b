"""Training stage: model.py, losses.py and transforms.py are pure torch; trainer.py (Ray Train DDP) and predict.py (Ray Data) wire them."""
