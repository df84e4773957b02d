"""Layer ``learning``: tokens -> features -> network, with no I/O.

Word lists (:mod:`~nnspam.learning.wordlist`), feature vectors
(:mod:`~nnspam.learning.features`), the NumPy networks and their optimisers
(:mod:`~nnspam.learning.network`, :mod:`~nnspam.learning.arch`) and the optional
Keras training backend (:mod:`~nnspam.learning.keras_backend`), in scikit-learn's
``fit`` / ``partial_fit`` / ``predict_proba`` shape.
"""
