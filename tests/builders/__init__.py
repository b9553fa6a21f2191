"""What more than one test module builds: sample inputs (a campaign file, a draft, an email), and
each service's connection and backend against its double (``tests/doubles/``).

Test modules import from here (and from ``tests/stack.py``, ``tests/worlds.py``, ``tests/doubles/``
...), never from one another: ``tests/test_layers.py`` checks it. A builder one module alone needs
stays in that module.
"""
