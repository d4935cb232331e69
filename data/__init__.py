"""Datasets, manifests, augmentation presets, importers and the synthetic scene generator."""
