"""Training data: dataset preparation from CT folders, and real radiograph folders."""
