"""Layer ``services``: spamicity -> verdict -> action, for each way mail arrives.

The verdict rule (:mod:`~nnspam.services.verdict`), the maildir sorter and daemon,
the pipe filter, the spamd-protocol server and its spamc client, the online and
stream learners, batch training and test runs, and the system helpers they share
(systemd notification, BLAS threads). Each front calls these; none has its own copy.
"""
