"""GUI-free logic of the CT2XSynthesis Slicer module (no ``qt``, no ``ScriptedLoadableModule``)."""
