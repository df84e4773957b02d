"""nnspam: a spam filter built on an adaptive word-list neural network.

The data path is the package layout: bytes -> message (``message``) -> tokens
(``tokens``) -> features (``features``) -> network (``network``) -> spamicity and
verdict (``model``) -> action (``cli`` and, later, the daemon and pipe filter).
"""

__version__ = "0.1.0"
