"""Layer ``front``: what a user runs, the ``nnspam`` command line and the SMS side.

:mod:`~nnspam.front.cli` parses the command line and dispatches to the commands;
:mod:`nnspam.front.sms` turns SMS into mail for the same path. Nothing imports this
layer but ``python -m nnspam``.
"""
