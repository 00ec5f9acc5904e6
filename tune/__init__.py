"""Hyperparameter sweeps: Ray Tune + Optuna over config overrides (``selfpose3d tune``).

``tune.space`` reads search spaces (YAML keyed by dotted config paths, ``spaces/``);
``tune.sweep`` runs them, each trial a Ray Train run tracked in MLflow.
"""
