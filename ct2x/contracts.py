"""Names the core and the two Slicer modules share, defined once here and importable without torch.

The Slicer modules' GUI-free Libs (``CT2XSynthesisLib``, ``CT2XTrainingLib``) import these names
from here instead of repeating them, and the core uses the same ones. This module imports nothing,
so listing a model's styles or building a panel needs neither torch nor safetensors. (The lines
``ct2x train`` prints for the modules are defined in :mod:`ct2x.progress_line`; the preset names
in :data:`ct2x.config.PRESETS`, which is torch-free too.)
"""

from __future__ import annotations

#: Name prefix of the reference style codes stored in a model file: tensor ``style_code.<name>``
#: (written by ``ct2x train``, read by :func:`ct2x.checkpoint.load_style_codes`).
STYLE_CODE_PREFIX = "style_code."

#: Device choices of both modules' panels: ``auto`` = ``cuda`` when torch sees a GPU, else ``cpu``
#: (:func:`ct2x.device.torch_device`; a training job given ``auto`` gets no ``--device``, the same rule).
DEVICE_CHOICES = ("auto", "cpu", "cuda")

#: The CT2XSynthesis panel's model choices. CT2XTraining's "Use model" selects :data:`MODEL_FILE`, so
#: both modules take the names from here (neither imports the other's logic).
MODEL_BUNDLED, MODEL_FILE, MODEL_NONE = "Bundled model", "Model file", "None: DRR (physics)"
MODEL_SOURCES = (MODEL_BUNDLED, MODEL_FILE, MODEL_NONE)
