"""JSON Schemas (draft 2020-12) of the records newsflow writes, generated from the pydantic models.

The ``*.json`` files here are the contract for consumers in other languages; regenerate them with
``python -m schemas.generate`` after changing :mod:`newsflow.records` (a test fails on any drift).
"""
