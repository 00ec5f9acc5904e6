"""Cameras, projection with lens distortion, affine image transforms and triangulation.

Pure NumPy / torch functions (no Ray); see each module's docstring for frames and units:
``camera`` (Camera, project_points), ``affine`` (augmentation and resize transforms),
``triangulation`` (DLT, robust triangulation). Import from the modules: this package does not
re-export them, so that reading a calibration does not load torch.
"""
