"""Training, evaluation and prediction loops built on the model core."""
