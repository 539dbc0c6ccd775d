"""Models: the sentence encoder, the taxonomy, topic classification and stance detection.

Trained artifacts small enough to commit live in ``models/artifacts/``, each with a model card.
"""
