"""Training: per-stage step functions, one loop, checkpoints, and the run driver.

Entry points (import the submodules directly; this file imports nothing):
``training.run.train`` (whole runs), ``training.evaluate.evaluate`` (a trained model scored),
``training.loop.train_stage`` (one stage over any iterable of batches),
``training.steps.STAGES`` (what each stage does).
"""
