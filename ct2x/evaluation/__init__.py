"""Evaluation of CT2X models on held-out CTs and radiographs.

* :mod:`ct2x.evaluation.evaluate`: the ``ct2x evaluate`` command: reads and checks the inputs, makes
  every method's images, scores them, writes the report.
* :mod:`ct2x.evaluation.report`: the report folder (``report.md``, ``metrics.json``, the figures, the
  image index of ``images/``).
* :mod:`ct2x.evaluation.methods`: the images every method makes of the same CTs and views
  (physics DRR, styled DRR, imaging chain with a fitted style, untrained control, model) and the
  scores computed on them.
* :mod:`ct2x.evaluation.measures`: the image measures (edge agreement, content sensitivity,
  magnification, style spread, FID formula, C2ST).
* :mod:`ct2x.evaluation.inception`: offline InceptionV3 features for FID and KID.
* :mod:`ct2x.evaluation.study`: ``ct2x study``, a blinded reader study in a web browser.
"""
