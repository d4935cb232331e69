"""Networks, training and evaluation loops, checkpoints and MLflow glue."""
