"""The bundled example: a Fashion-MNIST subset and a trained teacher."""
