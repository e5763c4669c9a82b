"""GUI-free logic of the CT2XTraining Slicer module (no ``qt``, no ``ScriptedLoadableModule``)."""
