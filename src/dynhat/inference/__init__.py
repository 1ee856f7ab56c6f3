"""What serving a trained SuperTransformer needs, and nothing of training or search: the checkpoint and release
formats (``checkpoint``, ``release``: save, load, validate, ``load_trained``), the operating-point library
(``points``) and the latency measurement protocol with CPU/thread pinning (``measure``).

``runtime`` and the HTTP service import only this, ``model``, ``space``, ``data`` (vocabularies) and
``translate``, so a service process never loads the trainer or the search's optimisers.
"""
