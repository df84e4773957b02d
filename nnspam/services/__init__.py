"""Layer ``services``: spamicity -> verdict -> action, for each way mail arrives.

The modules here are the ones every seam shares: the verdict rule
(:mod:`~nnspam.services.verdict`), the scoring every front classifies with
(:mod:`~nnspam.services.scoring`), the errors and sysexits codes
(:mod:`~nnspam.services.errors`), explanations, metrics and the system helpers
(systemd notification, BLAS threads). Above them ``models`` (where served models come
from), then ``delivery`` (sorter, daemon, pipe filter, spamc client, IMAP), ``spamd``
(the scoring server) and ``runs`` (training and test runs). Each front calls these;
none has its own copy.
"""
