"""The bundled paravirtual guest kernel: C sources and their build."""
