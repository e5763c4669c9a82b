"""CT2X: multi-view X-ray synthesis from CT scans (CT2X-GAN, ACM MM 2024), pure-PyTorch core.

Coordinate frames: the world is the CT's physical LPS space in millimetres (as in ITK and
DICOM). Angles are in degrees at every public interface. See ``ct2x.geometry``.
"""

from ct2x.errors import CT2XError

__version__ = "0.1.0"
__all__ = ["CT2XError", "__version__"]
